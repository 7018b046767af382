"""1x1 convolutions of MobileNetV2, EfficientNet-B0 and MobileNetV3: conv_forward's OpenBLAS SGEMM per
image against the direct pointwise kernel (pointwise_forward, csrc/pointwise.c).

Where conv_forward's plan now picks the pointwise kernel ("plan" column), the GEMM side is timed
in the generic variant, whose plan still runs the SGEMM (the same OpenBLAS kernel; only the
bias + activation pass after it is compiled for SSE2 instead of AVX2).

    flock /tmp/decaf-bench.lock python benchmarks/bench_pointwise.py [--batches 1 16] [--rounds 5]
        [--threads 2] [--min-time 0.03] [--json OUT]

Per layer and batch the kernels take turns, each timed over calls lasting --min-time, best of
--rounds rounds, so a drift of a shared machine moves both alike and the ratio is the figure to
compare. Both run bias + ReLU6 (the expansion layers' epilogue). Each layer is checked first: the
outputs agree within 1e-5 of the largest value. Prints a Markdown table (ms per call, GFLOP/s, ratio
conv_forward time / pointwise time: > 1 means the pointwise kernel is faster; also with the weights
packed once, pointwise_pack, as a prepacked plan runs it) and the CPU.
"""
import argparse
import datetime
import json
import os
import sys

import numpy as np

from bench_common import cpu_name, best_time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (net, C, K, H = W): the 1x1 shapes of MobileNetV2 (expansion 6, widths 16, 24, 32, 64, 96, 160, 320,
# head 1280), with a few of EfficientNet-B0's and MobileNetV3-Large's.
LAYERS = [
    ("mobilenet_v2", 32, 16, 112), ("mobilenet_v2", 16, 96, 112), ("mobilenet_v2", 96, 24, 56),
    ("mobilenet_v2", 24, 144, 56), ("mobilenet_v2", 144, 24, 56), ("mobilenet_v2", 144, 32, 28),
    ("mobilenet_v2", 32, 192, 28), ("mobilenet_v2", 192, 32, 28), ("mobilenet_v2", 192, 64, 14),
    ("mobilenet_v2", 64, 384, 14), ("mobilenet_v2", 384, 64, 14), ("mobilenet_v2", 384, 96, 14),
    ("mobilenet_v2", 96, 576, 14), ("mobilenet_v2", 576, 96, 14), ("mobilenet_v2", 576, 160, 7),
    ("mobilenet_v2", 160, 960, 7), ("mobilenet_v2", 960, 160, 7), ("mobilenet_v2", 960, 320, 7),
    ("mobilenet_v2", 320, 1280, 7),
    ("efficientnet_b0", 40, 240, 28), ("efficientnet_b0", 240, 40, 28), ("efficientnet_b0", 80, 480, 14),
    ("efficientnet_b0", 672, 192, 7), ("efficientnet_b0", 1152, 320, 7),
    ("mobilenet_v3", 16, 64, 112), ("mobilenet_v3", 72, 40, 28), ("mobilenet_v3", 120, 40, 28),
    ("mobilenet_v3", 40, 240, 28), ("mobilenet_v3", 480, 112, 14), ("mobilenet_v3", 112, 672, 14),
    # narrow inputs that do not widen 4x (MobileNetV3's 16->16 and 24->72, ShuffleNetV2's 24->58
    # and 58->58, EfficientNet-B0's 32->96 at 56x56 and 40->120)
    ("narrow", 16, 16, 112), ("narrow", 24, 72, 56), ("narrow", 72, 24, 56), ("narrow", 24, 58, 56),
    ("narrow", 32, 96, 56), ("narrow", 40, 120, 28), ("narrow", 58, 58, 28), ("narrow", 120, 40, 28),
]


def bench_layer(compiled, cpu, C, K, size, batch, rounds, min_time):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, C, size, size)).astype(np.float32)
    w = rng.standard_normal((K, C, 1, 1)).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32)
    y_old = np.empty((batch, K, size, size), np.float32)
    y_new = np.empty_like(y_old)
    geom = ((1, 1), (1, 1), (0, 0, 0, 0), (1, 1), (size, size))
    work = np.empty(max(compiled.conv_work_size(x.shape, w.shape, 1, *geom, False), 1), np.float32)
    plan = compiled.conv_plan(x.shape, w.shape, 1, *geom)
    relu6 = ("clamp", 0.0, 6.0, 0.0)

    isa = cpu.get_isa()
    # where the plan now runs the pointwise kernel, the GEMM path is what the generic variant's plan
    # runs (the same OpenBLAS SGEMM; only the epilogue pass is compiled for SSE2 there)
    gemm_isa = "generic" if plan.get("pointwise") else isa

    def old():
        compiled.conv_forward(x, w, bias, y_old, work, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, act=relu6)

    def time_old():
        cpu.set_isa(gemm_isa)
        try:
            return best_time(old, min_time)
        finally:
            cpu.set_isa(isa)

    def new():
        compiled.pointwise_forward(x, w, bias, y_new, act=relu6)

    packed = compiled.pointwise_pack(w)

    def new_packed():
        compiled.pointwise_forward(x, w, bias, y_new, act=relu6, packed=packed)

    # the scale of the errors: the largest value before the activation clamps it
    scale = float(np.abs(np.einsum("kc,bcp->bkp", w[:, :, 0, 0], x.reshape(batch, C, -1))
                         + bias[:, None]).max())
    time_old()
    for fn in (new, new_packed):
        y_new.fill(np.nan)
        fn()
        if not float(np.abs(y_old - y_new).max()) <= 1e-5 * scale:
            raise SystemExit(f"outputs differ on {C}->{K} at {size}x{size}, batch {batch}")
    t_old = t_new = t_packed = float("inf")
    for _ in range(rounds):
        t_old = min(t_old, time_old())
        t_new = min(t_new, best_time(new, min_time))
        t_packed = min(t_packed, best_time(new_packed, min_time))
    flops = 2.0 * batch * C * K * size * size
    ran = "gemm, generic variant" if plan.get("pointwise") else "direct" if plan["direct"] else "gemm"
    return {"old_ms": t_old * 1e3, "new_ms": t_new * 1e3, "packed_ms": t_packed * 1e3,
            "old_gflops": flops / t_old / 1e9, "new_gflops": flops / t_new / 1e9,
            "packed_gflops": flops / t_packed / 1e9, "ratio": t_old / t_new, "packed_ratio": t_old / t_packed,
            "plan": ran}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=0.03, help="seconds of calls per timing")
    parser.add_argument("--only", help="run only the layers of this net")
    parser.add_argument("--json", help="write the results here (default: benchmarks/results_pointwise_<date>.json)")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    import decaf.blas  # noqa: F401  (loads the SGEMM conv_forward calls)
    from decaf import cpu
    from decaf.kernels import _compiled as compiled
    from decaf.threads import using_threads

    print(f"CPU: {cpu_name()}; kernel variant {cpu.get_isa()}; {args.threads} threads")
    print("| net | C->K | HxW | B | conv_forward ms (plan) | pointwise ms | GFLOP/s old / new | ratio | "
          "packed once: GFLOP/s, ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    results = []
    with using_threads(args.threads):
        for batch in args.batches:
            for net, C, K, size in LAYERS:
                if args.only and args.only != net:
                    continue
                r = bench_layer(compiled, cpu, C, K, size, batch, args.rounds, args.min_time)
                r.update(net=net, C=C, K=K, size=size, batch=batch)
                results.append(r)
                print(f"| {net} | {C}->{K} | {size} | {batch} | {r['old_ms']:.3f} ({r['plan']}) | "
                      f"{r['new_ms']:.3f} | {r['old_gflops']:.1f} / {r['new_gflops']:.1f} | {r['ratio']:.2f} | "
                      f"{r['packed_gflops']:.1f}, {r['packed_ratio']:.2f} |", flush=True)
    for batch in args.batches:
        rows = [r for r in results if r["batch"] == batch]
        if rows:
            old = sum(r["old_ms"] for r in rows)
            new = sum(r["new_ms"] for r in rows)
            packed = sum(r["packed_ms"] for r in rows)
            print(f"B={batch}: all layers {old:.2f} ms -> {new:.2f} ms ({old / new:.2f}x), "
                  f"packed once {packed:.2f} ms ({old / packed:.2f}x)")
    out = args.json or os.path.join(ROOT, "benchmarks",
                                    f"results_pointwise_{datetime.date.today().isoformat()}.json")
    with open(out, "w") as f:
        json.dump({"cpu": cpu_name(), "isa": cpu.get_isa(), "threads": args.threads, "rounds": args.rounds,
                   "results": results}, f, indent=1)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
