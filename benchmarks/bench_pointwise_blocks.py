"""1x1 convolutions on 7x7 planes: a batch's images gathered into blocks of up to 6 per GEMM (what
conv_forward's plan does there now, csrc/conv.c) against one GEMM per image (what it did before).

    flock /tmp/decaf-bench.lock python benchmarks/bench_pointwise_blocks.py [--batch 16] [--rounds 5]
        [--min-time 0.03] [--json OUT]

On one thread, so both sides run the same code but for the blocking: "one per GEMM" calls
conv_forward on each image in turn (a 1-image batch on 1 thread: one GEMM reading x in place),
"blocked" calls it once on the batch. The two take turns, best of --rounds rounds; each checks
against the other first. The layers are ResNet-50's, MobileNetV2's and DenseNet-121's 7x7 ones
(bias and ReLU fused). Prints a Markdown table (ratio > 1: blocking is faster) and the CPU.
"""
import argparse
import datetime
import json
import os
import sys

import numpy as np

from bench_common import cpu_name, best_time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (net, C, K) at 7x7
LAYERS = [("resnet50", 512, 2048), ("resnet50", 2048, 512), ("mobilenet_v2", 160, 960),
          ("mobilenet_v2", 960, 160), ("mobilenet_v2", 960, 320), ("mobilenet_v2", 320, 1280),
          ("mobilenet_v2", 576, 160), ("densenet121", 1024, 128)]
GEOMETRY = ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1))


def bench_layer(kernels, C, K, batch, rounds, min_time):
    rng = np.random.default_rng(C * K)
    x = rng.standard_normal((batch, C, 7, 7)).astype(np.float32)
    w = (rng.standard_normal((K, C, 1, 1)) / np.sqrt(C)).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32)
    y_one, y_blocked = np.empty((batch, K, 7, 7), np.float32), np.empty((batch, K, 7, 7), np.float32)
    work = np.empty(max(kernels.conv_work_size(x, w, 1, *GEOMETRY, (7, 7)), 1), np.float32)

    def one_per_gemm():
        for b in range(batch):
            kernels.conv_forward(x[b:b + 1], w, bias, y_one[b:b + 1], work, *GEOMETRY, 1, relu=True)

    def blocked():
        kernels.conv_forward(x, w, bias, y_blocked, work, *GEOMETRY, 1, relu=True)

    one_per_gemm()
    blocked()
    np.testing.assert_allclose(y_blocked, y_one, rtol=1e-5, atol=1e-5 * float(np.abs(y_one).max()))
    t_one = t_blocked = float("inf")
    for _ in range(rounds):
        t_one = min(t_one, best_time(one_per_gemm, min_time))
        t_blocked = min(t_blocked, best_time(blocked, min_time))
    flops = 2.0 * batch * 49 * C * K
    return {"one_ms": t_one * 1e3, "blocked_ms": t_blocked * 1e3, "one_gflops": flops / t_one / 1e9,
            "blocked_gflops": flops / t_blocked / 1e9, "ratio": t_one / t_blocked}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.03, help="seconds of calls per timing")
    parser.add_argument("--json", help="write the results here (default: "
                                       "benchmarks/results_pointwise_blocks_<date>.json)")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    import decaf.blas  # noqa: F401  (loads the SGEMM conv_forward calls)
    from decaf import cpu, kernels
    from decaf.threads import using_threads

    print(f"CPU: {cpu_name()}; kernel variant {cpu.get_isa()}; 1 thread; batch {args.batch}")
    print("| net | C->K | one per GEMM ms | blocked ms | GFLOP/s one / blocked | ratio |")
    print("|---|---|---|---|---|---|")
    results = []
    with using_threads(1):
        for net, C, K in LAYERS:
            r = bench_layer(kernels, C, K, args.batch, args.rounds, args.min_time)
            r.update(net=net, C=C, K=K, batch=args.batch)
            results.append(r)
            print(f"| {net} | {C}->{K} | {r['one_ms']:.3f} | {r['blocked_ms']:.3f} | "
                  f"{r['one_gflops']:.1f} / {r['blocked_gflops']:.1f} | {r['ratio']:.2f} |", flush=True)
    one = sum(r["one_ms"] for r in results)
    blocked = sum(r["blocked_ms"] for r in results)
    print(f"all layers {one:.2f} ms -> {blocked:.2f} ms ({one / blocked:.2f}x)")
    out = args.json or os.path.join(ROOT, "benchmarks",
                                    f"results_pointwise_blocks_{datetime.date.today().isoformat()}.json")
    with open(out, "w") as f:
        json.dump({"cpu": cpu_name(), "isa": cpu.get_isa(), "threads": 1, "rounds": args.rounds,
                   "results": results}, f, indent=1)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
