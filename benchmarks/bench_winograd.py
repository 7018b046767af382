"""Winograd F(4x4, 3x3) (winograd_forward) against decaf's current path (conv_forward: direct or
im2col + GEMM) on the 3x3 stride-1 layers of ResNet-18/50, VGG-16 and DenseNet-121.

    python benchmarks/bench_winograd.py [--batch 1 16] [--rounds 3] [--budget 1.0] [--threads 2]
                                        [--nets resnet vgg densenet] [--json OUT]

Per layer and batch, both run once as a warm-up, then in turns (conv, Winograd, conv, ...), each
keeping its best: a drift of a shared machine moves both alike. At least `rounds` turns, more (up
to 50) while they fit in `budget` seconds. The weight
transform (winograd_pack) is done once, outside the timing, as a net does at load, and so is the
conv path's weight packing where this decaf has one (conv_pack; path "+pk"); both get scratch space
allocated beforehand. Prints ms per
forward, the speedup (conv / Winograd), Winograd's error relative to the largest output (vs the
conv path, which is itself ~1e-6), and the CPU. Run it alone on the machine (flock
/tmp/decaf-bench.lock python ...).
"""
import argparse
import json
import os
import sys
import time

from bench_common import cpu_name  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (net, C, HW, K): the 3x3 stride-1 layers, padding 1
LAYERS = [
    ("resnet", 64, 56, 64), ("resnet", 128, 28, 128), ("resnet", 256, 14, 256), ("resnet", 512, 7, 512),
    ("vgg", 64, 224, 64), ("vgg", 128, 112, 128), ("vgg", 256, 56, 256), ("vgg", 512, 28, 512),
    ("vgg", 512, 14, 512),
    ("densenet", 128, 56, 32), ("densenet", 128, 28, 32), ("densenet", 128, 14, 32), ("densenet", 128, 7, 32),
]
PADS = (1, 1, 1, 1)


def best_times(runs, rounds, budget):
    """Each callable's best time in seconds over at least `rounds` turns (after one warm-up each),
    more (up to 50) while the turns fit in `budget` seconds: short layers get many, so that a
    moment of contention on a shared machine is less likely to be in every one."""
    warm = 0.0
    for f in runs:
        t = time.perf_counter()
        f()
        warm += time.perf_counter() - t
    rounds = max(rounds, min(50, int(budget / max(warm, 1e-9))))
    best = [float("inf")] * len(runs)
    for _ in range(rounds):
        for i, f in enumerate(runs):
            t = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def layer_case(np, k, B, C, HW, K):
    """Inputs, weights, bias, and the two forwards (closures writing their own outputs)."""
    rng = np.random.default_rng(C + HW + K)
    x = rng.standard_normal((B, C, HW, HW)).astype(np.float32)
    w = (rng.standard_normal((K, C, 3, 3)) * np.sqrt(2.0 / (9 * C))).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32)
    y_conv = np.empty((B, K, HW, HW), np.float32)
    y_wino = np.empty_like(y_conv)
    geom = (x.shape, w.shape, 1, (3, 3), (1, 1), PADS, (1, 1), (HW, HW))
    packed = None   # the conv path's weights packed beforehand too, where this decaf can (conv_pack)
    if hasattr(k, "conv_packing"):
        kind, size = k.conv_packing(*geom)
        if kind:
            packed = (kind, np.empty(size, np.float32))
            k.conv_pack(x.shape, w, packed[1], *geom[2:])
    extra = {"prepacked": True} if packed else {}
    work = np.empty(max(k.conv_work_size(*geom, False, **extra), 1), np.float32)
    conv_extra = {"packed": packed} if packed else {}
    u = k.winograd_pack(w)
    wino_work = np.empty(max(k.winograd_work_size(x.shape, w.shape, PADS), 1), np.float32)
    relu = ("clamp", 0.0, float("inf"), 0.0)

    def conv():
        k.conv_forward(x, w, bias, y_conv, work, (3, 3), (1, 1), PADS, (1, 1), 1, act=relu, **conv_extra)

    def wino():
        k.winograd_forward(x, u, w.shape, bias, y_wino, PADS, act=relu, work=wino_work)

    path = ("direct" if k.conv_plan(*geom)["direct"] else "im2col") + ("+pk" if packed else "")
    return conv, wino, y_conv, y_wino, path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3, help="at least this many turns per layer")
    parser.add_argument("--budget", type=float, default=1.0, help="more turns (up to 50) while they fit in this many s")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nets", nargs="+", default=["resnet", "vgg", "densenet"])
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    import numpy as np

    import decaf
    import decaf.blas  # noqa: F401  (loads decaf's OpenBLAS)
    from decaf.kernels import _compiled as k

    decaf.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}; decaf kernels {k.isa_current()}, {args.threads} threads, best of >= {args.rounds} turns")
    print(f"{'net':9} {'C':>4} {'HxW':>7} {'K':>4} {'B':>3} {'path':>9} {'conv ms':>9} {'wino ms':>9} "
          f"{'speedup':>8} {'wino err':>9}")
    results = []
    for net, C, HW, K in LAYERS:
        if net not in args.nets:
            continue
        for B in args.batch:
            conv, wino, y_conv, y_wino, path = layer_case(np, k, B, C, HW, K)
            t_conv, t_wino = best_times([conv, wino], args.rounds, args.budget)
            err = float(np.abs(y_wino - y_conv).max() / np.abs(y_conv).max())
            results.append({"net": net, "C": C, "HW": HW, "K": K, "B": B, "path": path,
                            "conv_ms": 1e3 * t_conv, "wino_ms": 1e3 * t_wino, "speedup": t_conv / t_wino,
                            "error": err})
            print(f"{net:9} {C:4} {HW:>3}x{HW:<3} {K:4} {B:3} {path:>9} {1e3 * t_conv:9.2f} {1e3 * t_wino:9.2f} "
                  f"{t_conv / t_wino:7.2f}x {err:9.1e}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_name(), "isa": k.isa_current(), "threads": args.threads,
                       "rounds": args.rounds, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
