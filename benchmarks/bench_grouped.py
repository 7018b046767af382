"""Grouped 3x3 convolutions of RegNetY-400MF and ResNeXt-50 32x4d: conv_forward (im2col + GEMM per
group, or whatever its plan runs) against the direct grouped kernel (grouped_conv_forward).

    flock /tmp/decaf-bench.lock python benchmarks/bench_grouped.py [--batches 1 16] [--rounds 7]
        [--threads 2] [--min-time 0.05] [--json OUT]

Per layer and batch: the two kernels take turns, each timed over a few calls per round (enough
calls to last --min-time), best of --rounds rounds; so a drift of a shared machine moves both
alike and the ratio is the figure to compare. Each layer is checked first: both outputs agree
within 1e-5 of the largest value. Prints a Markdown table (ms per call, GFLOP/s, ratio im2col+GEMM
time / grouped time: > 1 means the grouped kernel is faster; also with the weights packed once,
grouped_conv_pack, as a plan keeping them would run it) and the CPU.
"""
import argparse
import json
import os
import sys

import numpy as np

from bench_common import cpu_name, best_time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (net, name, channels, groups, input size, stride, layers of this shape in the net)
# RegNetY-400MF: widths 48, 104, 208, 440, group width 8, depths 1, 3, 6, 6, the first block of each
# stage at stride 2 (its 3x3 conv). ResNeXt-50 32x4d: 32 groups, widths 128, 256, 512, 1024 (4, 8,
# 16, 32 channels per group), depths 3, 4, 6, 3, stride 2 in the first block's 3x3 from stage 2 on.
LAYERS = [
    ("regnety_400mf", "s1 48/6 s2", 48, 6, 112, 2, 1),
    ("regnety_400mf", "s2 104/13 s2", 104, 13, 56, 2, 1),
    ("regnety_400mf", "s2 104/13", 104, 13, 28, 1, 2),
    ("regnety_400mf", "s3 208/26 s2", 208, 26, 28, 2, 1),
    ("regnety_400mf", "s3 208/26", 208, 26, 14, 1, 5),
    ("regnety_400mf", "s4 440/55 s2", 440, 55, 14, 2, 1),
    ("regnety_400mf", "s4 440/55", 440, 55, 7, 1, 5),
    ("resnext50_32x4d", "s1 128/32", 128, 32, 56, 1, 3),
    ("resnext50_32x4d", "s2 256/32 s2", 256, 32, 56, 2, 1),
    ("resnext50_32x4d", "s2 256/32", 256, 32, 28, 1, 3),
    ("resnext50_32x4d", "s3 512/32 s2", 512, 32, 28, 2, 1),
    ("resnext50_32x4d", "s3 512/32", 512, 32, 14, 1, 5),
    ("resnext50_32x4d", "s4 1024/32 s2", 1024, 32, 14, 2, 1),
    ("resnext50_32x4d", "s4 1024/32", 1024, 32, 7, 1, 2),
]


def bench_layer(compiled, C, G, size, stride, batch, rounds, min_time):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, C, size, size)).astype(np.float32)
    w = rng.standard_normal((C, C // G, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(C).astype(np.float32)
    Ho = (size + 2 - 3) // stride + 1
    y_gemm = np.empty((batch, C, Ho, Ho), np.float32)
    y_grouped = np.empty_like(y_gemm)
    geom = ((3, 3), (stride, stride), (1, 1, 1, 1), (1, 1), (Ho, Ho))
    work = np.empty(max(compiled.conv_work_size(x.shape, w.shape, G, *geom, False), 1), np.float32)
    plan = compiled.conv_plan(x.shape, w.shape, G, *geom)

    def gemm():
        compiled.conv_forward(x, w, bias, y_gemm, work, (3, 3), (stride, stride), (1, 1, 1, 1), (1, 1), G,
                              relu=True)

    def grouped():
        compiled.grouped_conv_forward(x, w, bias, y_grouped, (stride, stride), (1, 1, 1, 1), G,
                                      act=("clamp", 0.0, float("inf"), 0.0))

    packed = compiled.grouped_conv_pack(w, G)

    def grouped_packed():   # the weights packed once, as a plan that keeps them would
        compiled.grouped_conv_forward(x, w, bias, y_grouped, (stride, stride), (1, 1, 1, 1), G,
                                      act=("clamp", 0.0, float("inf"), 0.0), packed=packed)

    gemm()
    grouped()
    scale = float(np.abs(y_gemm).max())
    err = float(np.abs(y_gemm - y_grouped).max())
    if not err <= 1e-5 * scale:
        raise SystemExit(f"outputs differ: {err} (largest value {scale})")
    grouped_packed()
    if not float(np.abs(y_gemm - y_grouped).max()) <= 1e-5 * scale:
        raise SystemExit("outputs differ with the weights packed once")
    t_gemm = t_grouped = t_packed = float("inf")
    for _ in range(rounds):
        t_gemm = min(t_gemm, best_time(gemm, min_time))
        t_grouped = min(t_grouped, best_time(grouped, min_time))
        t_packed = min(t_packed, best_time(grouped_packed, min_time))
    macs = batch * C * Ho * Ho * (C // G) * 9
    return {"gemm_ms": t_gemm * 1e3, "grouped_ms": t_grouped * 1e3, "ratio": t_gemm / t_grouped,
            "packed_ms": t_packed * 1e3, "packed_ratio": t_gemm / t_packed,
            "grouped_gflops": 2 * macs / t_grouped / 1e9, "gemm_gflops": 2 * macs / t_gemm / 1e9,
            "direct_plan": plan["direct"],
            "preferred": compiled.grouped_conv_preferred(x.shape, w.shape, G, *geom)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds of calls per timing")
    parser.add_argument("--only", help="run only the layers whose net or name contains this")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    import decaf.blas  # noqa: F401  (loads the SGEMM conv_forward calls)
    from decaf import cpu
    from decaf.kernels import _compiled as compiled
    from decaf.threads import using_threads

    print(f"CPU: {cpu_name()}; kernel variant {cpu.get_isa()}; {args.threads} threads")
    print("| net | layer | in | B | im2col+GEMM ms | grouped ms | GFLOP/s gemm / grouped | ratio | "
          "packed once: ms, ratio | preferred |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = []
    with using_threads(args.threads):
        for batch in args.batches:
            for net, name, C, G, size, stride, count in LAYERS:
                if args.only and args.only not in net + " " + name:
                    continue
                r = bench_layer(compiled, C, G, size, stride, batch, args.rounds, args.min_time)
                r.update(net=net, layer=name, C=C, G=G, size=size, stride=stride, batch=batch, count=count)
                results.append(r)
                print(f"| {net} | {name} | {size} | {batch} | {r['gemm_ms']:.3f} | {r['grouped_ms']:.3f} | "
                      f"{r['gemm_gflops']:.1f} / {r['grouped_gflops']:.1f} | {r['ratio']:.2f} | "
                      f"{r['packed_ms']:.3f}, {r['packed_ratio']:.2f} | "
                      f"{'yes' if r['preferred'] else 'no'} |", flush=True)
    for batch in args.batches:
        for net in sorted({layer[0] for layer in LAYERS}):
            rows = [r for r in results if r["net"] == net and r["batch"] == batch]
            if rows:
                gemm = sum(r["gemm_ms"] * r["count"] for r in rows)
                grouped = sum(r["grouped_ms"] * r["count"] for r in rows)
                print(f"{net} B={batch}: all grouped layers {gemm:.2f} ms -> {grouped:.2f} ms ({gemm / grouped:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_name(), "isa": cpu.get_isa(), "threads": args.threads, "results": results}, f,
                      indent=1)


if __name__ == "__main__":
    main()
