"""Convolution backward on the 3x3 stride-1 layers of ResNet-18 and CaffeNet: the old path against
the new one, in one process, kernels taking turns.

    flock /tmp/decaf-bench.lock python benchmarks/bench_backward.py [--batch 32] [--rounds 3] [--json OUT]

Per layer:
  * dW and db: kernels.conv_backward(dx=None) planned as the full backward (im2col + GEMM) against
    conv_backward(weights_only=True), whose plan runs Winograd's transposed transforms where the
    forward would pick Winograd (csrc/winograd.c, decaf_winograd_weight_grad);
  * dx: conv_backward's dcols GEMM + col2im (the old path: the full backward minus its dW part,
    timed as full backward - weights-only GEMM backward) against the forward convolution of dy with
    the flipped, transposed filters on the forward's kernels (Convolution.backward's stride-1 path),
    its weights packed as the layer packs them (where the layer takes that path: not for Winograd
    under 64 tiles, Convolution._packing_pays; there the new dx is the old one).
Both sides are checked first: dW within 5e-5 and dx within 5e-5 of the largest value. Prints ms per
call and the ratio old / new (> 1: the new path is faster), records the CPU, writes JSON.
"""
import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import decaf  # noqa: E402
import decaf.kernels as kernels  # noqa: E402
from decaf.layers.conv import Convolution  # noqa: E402
from bench_common import cpu_name  # noqa: E402

# (net, C, K, H = W, group): 3x3, stride 1, pad 1
LAYERS = [("resnet18", 64, 64, 56, 1), ("resnet18", 128, 128, 28, 1), ("resnet18", 256, 256, 14, 1),
          ("resnet18", 512, 512, 7, 1), ("caffenet", 256, 384, 13, 1), ("caffenet", 384, 384, 13, 2),
          ("caffenet", 384, 256, 13, 2)]


def best(fn, rounds):
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench(C, K, H, G, batch, rounds, rng):
    x = rng.standard_normal((batch, C, H, H)).astype(np.float32)
    w = (rng.standard_normal((K, C // G, 3, 3)) * np.sqrt(2.0 / (9 * C // G))).astype(np.float32)
    dy = rng.standard_normal((batch, K, H, H)).astype(np.float32)
    geo = (G, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (H, H))
    args = ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), G)
    dw_old, dw_new, db = np.empty_like(w), np.empty_like(w), np.empty(K, np.float32)
    dx_old, dx_new = np.empty_like(x), np.empty_like(x)
    work_full = np.empty(kernels.conv_work_size(x, w, *geo, backward=True), np.float32)
    work_w = np.empty(kernels.conv_work_size(x, w, *geo, backward="weights"), np.float32)
    layer = Convolution.__new__(Convolution)               # only for its filter transposition
    layer.p = {"group": G}
    wt = layer._transposed_weights(w)
    geo_t = (G, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (H, H))
    kind, size = kernels.conv_packing(dy, wt, *geo_t)
    packed = np.empty(size, np.float32)
    work_t = np.empty(max(kernels.conv_work_size(dy, wt, *geo_t, False, bool(kind)), 1), np.float32)

    def old_weights():
        kernels.conv_backward(x, w, dy, None, dw_old, db, work_full, *args)

    def old_full():
        kernels.conv_backward(x, w, dy, dx_old, dw_old, db, work_full, *args)

    def new_weights():
        kernels.conv_backward(x, w, dy, None, dw_new, db, work_w, *args, weights_only=True)

    def new_dx():
        if kind:
            kernels.conv_pack(dy, wt, packed, *geo_t)
        kernels.conv_forward(dy, wt, None, dx_new, work_t, *args, packed=(kind, packed) if kind else None)

    old_full()
    new_weights()
    new_dx()
    for name, a, b in (("dW", dw_new, dw_old), ("dx", dx_new, dx_old)):
        err = float(np.abs(a - b).max() / np.abs(b).max())
        if err > 5e-5:
            raise SystemExit(f"{name} differs by {err:.1e} of its largest value (C {C}, K {K}, {H}x{H}, group {G})")
    t = {"old_dw": [], "old_full": [], "new_dw": [], "new_dx": []}
    for _ in range(rounds):                                  # the kernels take turns
        for key, fn in (("old_dw", old_weights), ("new_dw", new_weights), ("old_full", old_full), ("new_dx", new_dx)):
            t[key].append(best(fn, 1))
    b = {k: min(v) for k, v in t.items()}
    old_dx = max(b["old_full"] - b["old_dw"], 1e-9)
    layer_takes_it = bool(kind) and Convolution._packing_pays(kind, dy)
    if not layer_takes_it:          # the layer keeps GEMM + col2im for dx here: so does the new path
        b["new_dx"] = old_dx
    plan = kernels._compiled.conv_plan(x.shape, w.shape, *geo, backward="weights")
    return {"old_dw_ms": b["old_dw"] * 1e3, "new_dw_ms": b["new_dw"] * 1e3, "dw_ratio": b["old_dw"] / b["new_dw"],
            "old_dx_ms": old_dx * 1e3, "new_dx_ms": b["new_dx"] * 1e3, "dx_ratio": old_dx / b["new_dx"],
            "old_backward_ms": b["old_full"] * 1e3, "new_backward_ms": (b["new_dw"] + b["new_dx"]) * 1e3,
            "ratio": b["old_full"] / (b["new_dw"] + b["new_dx"]),
            "dw_winograd": plan["winograd"], "dx_kind": int(kind) % 16 if layer_takes_it else 0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    print(f"CPU: {cpu_name()}; kernel variant {kernels._compiled.isa_current() if kernels._compiled else 'numpy'}; "
          f"{args.threads} threads; batch {args.batch}; best of {args.rounds}")
    print("| net | C->K | HxW | group | dW ms old / new (ratio) | dx ms old / new (ratio) | backward old / new (ratio) |")
    print("|---|---|---|---|---|---|---|")
    with decaf.threads.using_threads(args.threads):
        for net, C, K, H, G in LAYERS:
            r = bench(C, K, H, G, args.batch, args.rounds, rng)
            rows.append({"net": net, "C": C, "K": K, "size": H, "group": G, **r})
            print(f"| {net} | {C}->{K} | {H} | {G} | {r['old_dw_ms']:.1f} / {r['new_dw_ms']:.1f} ({r['dw_ratio']:.2f}) | "
                  f"{r['old_dx_ms']:.1f} / {r['new_dx_ms']:.1f} ({r['dx_ratio']:.2f}) | "
                  f"{r['old_backward_ms']:.1f} / {r['new_backward_ms']:.1f} ({r['ratio']:.2f}) |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       "cpu": cpu_name(), "threads": args.threads, "batch": args.batch, "rounds": args.rounds,
                       "layers": rows}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
