"""Depthwise convolutions of MobileNetV2, MobileNetV3-Large and EfficientNet-B0 (inference, fused
bias + activation): decaf's depthwise_conv_forward against PyTorch's conv2d(groups=C) + the
activation, NCHW and channels_last, in one process; optionally also against another build of
decaf's kernels (--baseline: a copy of an older decaf/kernels/_compiled*.so), for before / after.

    flock /tmp/decaf-bench.lock python benchmarks/bench_depthwise.py [--batches 1 16] [--rounds 5]
        [--threads 2] [--min-time 0.02] [--only TEXT] [--baseline SO] [--json OUT]

Per layer and batch the three (four) take turns, each timed over calls lasting --min-time, best of
--rounds rounds; so a drift of the shared machine moves all alike, and the ratios are the figures to
compare. Each layer is checked first: decaf's output and PyTorch's agree within 1e-5 of the largest
|y| (and the baseline's output is decaf's exactly). Prints a Markdown table (GFLOP/s, counting
2 kh kw flops per output; ratio = the faster PyTorch layout's time / decaf's: > 1 means decaf is
faster; speedup = the baseline's time / decaf's) and the CPU.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from bench_common import cpu_name, best_time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (net, channels, input size, kernel, stride, activation, layers of this shape in the net), 224x224 input.
# MobileNetV2: expansion t=6 blocks, widths 16, 24, 32, 64, 96, 160, 320 (first block t=1), ReLU6.
# MobileNetV3-Large: the bneck table of Howard et al. 2019 (expansion widths; ReLU in the first
# six, hard-swish after).
# EfficientNet-B0: MBConv stages (k, s, channels in): 3/1/32, 3/2/96, 5/2/144, 3/2/240, 5/1/480,
# 5/2/672, 3/1/1152, SiLU.
LAYERS = [
    ("mobilenet_v2", 32, 112, 3, 1, "relu6", 1),
    ("mobilenet_v2", 96, 112, 3, 2, "relu6", 1),
    ("mobilenet_v2", 144, 56, 3, 1, "relu6", 1),
    ("mobilenet_v2", 144, 56, 3, 2, "relu6", 1),
    ("mobilenet_v2", 192, 28, 3, 1, "relu6", 2),
    ("mobilenet_v2", 192, 28, 3, 2, "relu6", 1),
    ("mobilenet_v2", 384, 14, 3, 1, "relu6", 4),
    ("mobilenet_v2", 576, 14, 3, 1, "relu6", 2),
    ("mobilenet_v2", 576, 14, 3, 2, "relu6", 1),
    ("mobilenet_v2", 960, 7, 3, 1, "relu6", 3),
    ("mobilenet_v3_large", 16, 112, 3, 1, "relu", 1),
    ("mobilenet_v3_large", 64, 112, 3, 2, "relu", 1),
    ("mobilenet_v3_large", 72, 56, 3, 1, "relu", 1),
    ("mobilenet_v3_large", 72, 56, 5, 2, "relu", 1),
    ("mobilenet_v3_large", 120, 28, 5, 1, "relu", 2),
    ("mobilenet_v3_large", 240, 28, 3, 2, "hardswish", 1),
    ("mobilenet_v3_large", 200, 14, 3, 1, "hardswish", 1),
    ("mobilenet_v3_large", 184, 14, 3, 1, "hardswish", 2),
    ("mobilenet_v3_large", 480, 14, 3, 1, "hardswish", 1),
    ("mobilenet_v3_large", 672, 14, 3, 1, "hardswish", 1),
    ("mobilenet_v3_large", 672, 14, 5, 2, "hardswish", 1),
    ("mobilenet_v3_large", 960, 7, 5, 1, "hardswish", 2),
    ("efficientnet_b0", 32, 112, 3, 1, "silu", 1),
    ("efficientnet_b0", 96, 112, 3, 2, "silu", 1),
    ("efficientnet_b0", 144, 56, 3, 1, "silu", 1),
    ("efficientnet_b0", 144, 56, 5, 2, "silu", 1),
    ("efficientnet_b0", 240, 28, 5, 1, "silu", 1),
    ("efficientnet_b0", 240, 28, 3, 2, "silu", 1),
    ("efficientnet_b0", 480, 14, 3, 1, "silu", 2),
    ("efficientnet_b0", 480, 14, 5, 1, "silu", 1),
    ("efficientnet_b0", 672, 14, 5, 1, "silu", 2),
    ("efficientnet_b0", 672, 14, 5, 2, "silu", 1),
    ("efficientnet_b0", 1152, 7, 5, 1, "silu", 3),
    ("efficientnet_b0", 1152, 7, 3, 1, "silu", 1),
]

DECAF_ACT = {"relu6": ("clamp", 0.0, 6.0, 0.0), "relu": ("clamp", 0.0, float("inf"), 0.0),
             "hardswish": ("hardswish", 0.0, 0.0, 0.0), "silu": ("silu", 0.0, 0.0, 1.0)}


def load_baseline(path, threads):
    """Another build of decaf.kernels._compiled, loaded under its own name (its own copy of the
    library and of its state: thread count, kernel variant)."""
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.ExtensionFileLoader("_compiled", path)
    spec = importlib.util.spec_from_file_location("_compiled", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    module.set_num_threads(threads)
    return module


def bench_layer(compiled, torch, C, size, k, stride, act, batch, rounds, min_time, base=None):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, C, size, size)).astype(np.float32)
    w = (rng.standard_normal((C, 1, k, k)) / k).astype(np.float32)
    bias = rng.standard_normal(C).astype(np.float32)
    pad = k // 2
    Ho = (size + 2 * pad - k) // stride + 1
    y = np.empty((batch, C, Ho, Ho), np.float32)
    F = torch.nn.functional
    act_fn = {"relu6": lambda t: F.relu6(t, inplace=True), "relu": lambda t: F.relu(t, inplace=True),
              "hardswish": lambda t: F.hardswish(t, inplace=True), "silu": lambda t: F.silu(t, inplace=True)}[act]
    tx, tw, tb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias)
    tx_cl = tx.contiguous(memory_format=torch.channels_last)
    tw_cl = tw.contiguous(memory_format=torch.channels_last)

    def decaf():
        compiled.depthwise_conv_forward(x, w, y, (stride, stride), (pad,) * 4, (1, 1), bias, act=DECAF_ACT[act])

    y_base = np.empty_like(y)

    def baseline():
        base.depthwise_conv_forward(x, w, y_base, (stride, stride), (pad,) * 4, (1, 1), bias, act=DECAF_ACT[act])

    def torch_nchw():
        return act_fn(F.conv2d(tx, tw, tb, stride, pad, 1, C))

    def torch_cl():
        return act_fn(F.conv2d(tx_cl, tw_cl, tb, stride, pad, 1, C))

    with torch.inference_mode():
        decaf()
        ref = torch_nchw().numpy()
        scale = float(np.abs(ref).max())
        err = float(np.abs(ref - y).max())
        if not err <= 1e-5 * scale:
            raise SystemExit(f"decaf and PyTorch differ: {err} (largest |y| {scale})")
        err_cl = float(np.abs(torch_cl().contiguous().numpy() - y).max())
        if not err_cl <= 1e-5 * scale:
            raise SystemExit(f"decaf and PyTorch channels_last differ: {err_cl} (largest |y| {scale})")
        if base is not None:
            baseline()
            if not np.array_equal(y_base, y):
                raise SystemExit("decaf and the baseline build differ")
        t_decaf = t_nchw = t_cl = t_base = float("inf")
        for _ in range(rounds):
            t_decaf = min(t_decaf, best_time(decaf, min_time))
            if base is not None:
                t_base = min(t_base, best_time(baseline, min_time))
            t_nchw = min(t_nchw, best_time(torch_nchw, min_time))
            t_cl = min(t_cl, best_time(torch_cl, min_time))
    flops = 2.0 * batch * C * Ho * Ho * k * k
    r = {"decaf_ms": t_decaf * 1e3, "torch_nchw_ms": t_nchw * 1e3, "torch_cl_ms": t_cl * 1e3,
         "decaf_gflops": flops / t_decaf / 1e9, "torch_nchw_gflops": flops / t_nchw / 1e9,
         "torch_cl_gflops": flops / t_cl / 1e9, "ratio": min(t_nchw, t_cl) / t_decaf, "max_err": err / scale}
    if base is not None:
        r.update(base_ms=t_base * 1e3, speedup=t_base / t_decaf)
    return r


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=0.02, help="seconds of calls per timing")
    parser.add_argument("--only", help="run only the layers whose net contains this")
    parser.add_argument("--label", default="", help="a name for this run, kept in the JSON")
    parser.add_argument("--baseline", help="another build's _compiled*.so, timed alongside (before / after)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    import torch
    from decaf import cpu
    from decaf.kernels import _compiled as compiled
    from decaf.threads import using_threads

    torch.set_num_threads(args.threads)
    base = load_baseline(args.baseline, args.threads) if args.baseline else None
    if base is not None:
        base.isa_select(cpu.get_isa())
    print(f"CPU: {cpu_name()}; decaf kernel variant {cpu.get_isa()}; torch {torch.__version__}; "
          f"{args.threads} threads" + (f"; baseline {args.baseline}" if base else ""))
    print("| net | C | in | k | s | B | decaf ms | GFLOP/s decaf / torch NCHW / torch CL | ratio |"
          + (" baseline ms | speedup |" if base else ""))
    print("|---|---|---|---|---|---|---|---|---|" + ("---|---|" if base else ""))
    results = []
    start = time.perf_counter()
    with using_threads(args.threads):
        for batch in args.batches:
            for net, C, size, k, stride, act, count in LAYERS:
                if args.only and args.only not in net:
                    continue
                r = bench_layer(compiled, torch, C, size, k, stride, act, batch, args.rounds, args.min_time, base)
                r.update(net=net, C=C, size=size, k=k, stride=stride, act=act, batch=batch, count=count)
                results.append(r)
                print(f"| {net} | {C} | {size} | {k} | {stride} | {batch} | {r['decaf_ms']:.3f} | "
                      f"{r['decaf_gflops']:.1f} / {r['torch_nchw_gflops']:.1f} / {r['torch_cl_gflops']:.1f} | "
                      f"{r['ratio']:.2f} |" + (f" {r['base_ms']:.3f} | {r['speedup']:.2f} |" if base else ""),
                      flush=True)
    summary = {}
    for batch in args.batches:
        for net in sorted({layer[0] for layer in LAYERS}):
            rows = [r for r in results if r["net"] == net and r["batch"] == batch]
            if rows:
                d = sum(r["decaf_ms"] * r["count"] for r in rows)
                t = sum(min(r["torch_nchw_ms"], r["torch_cl_ms"]) * r["count"] for r in rows)
                summary[f"{net} B={batch}"] = {"decaf_ms": d, "torch_best_ms": t}
                line = (f"{net} B={batch}: all depthwise layers decaf {d:.2f} ms, torch (better layout per "
                        f"layer) {t:.2f} ms, ratio {t / d:.2f}")
                if base is not None:
                    b = sum(r["base_ms"] * r["count"] for r in rows)
                    summary[f"{net} B={batch}"]["base_ms"] = b
                    line += f"; baseline {b:.2f} ms, speedup {b / d:.2f}"
                print(line)
    print(f"({time.perf_counter() - start:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"label": args.label, "cpu": cpu_name(), "isa": cpu.get_isa(), "torch": torch.__version__,
                       "baseline": args.baseline,
                       "threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "summary": summary, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
