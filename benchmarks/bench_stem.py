"""The direct stem convolution (csrc/stem_conv.c) against im2col + GEMM (csrc/conv.c), in one process.

    flock /tmp/decaf-bench.lock python benchmarks/bench_stem.py [--rounds 5] [--min-time 0.03]
        [--batches 1 16] [--threads 1 2] [--skip-layers] [--others]
        [--nets NET.decaf ...] [--net-batches 1 16] [--forwards 10] [--json OUT]

Layers: the mobile nets' stems, 3 -> K channels, 3x3, stride 2, pad 1, 224x224 -> 112x112, with their
fused activations (MobileNetV2 K 32 ReLU6, MobileNetV3 K 16 hardswish, ShuffleNetV2 K 24 ReLU,
EfficientNet-B0 K 32 SiLU), at batch 1 and 16, on 1 and 2 threads. Both sides are conv_forward
calls prepared once (kernels.prepare_conv_forward, what a net's layer keeps): the old one with the
plan made under DECAF_STEM_CONV=off (the knob stem_conv.c reads when a plan is made; it forces
im2col + GEMM), the new one under DECAF_STEM_CONV=on. They take turns, best of --rounds rounds of
--min-time seconds each; their outputs are compared first. ratio = old / new (> 1: the stem kernel
is faster).

--others: also a few other 3-channel 3x3 convolutions (stride 1, small images), where the plan's
rule (csrc/stem_conv.c) was decided.

--wide: the 7x7 stems (ResNet, GoogLeNet, DenseNet: 3 -> 64, stride 2, pad 3, ReLU), the other
side then being the plan without the stem kernel (the direct kernel there).

--nets: whole nets (.decaf files, input (B, 3, 224, 224)) loaded twice, one copy's layers planned
(by their first forward) with the knob off, the other's with it on; then forward passes of the two
in turns, on 2 threads, the best of --forwards each (after warm-up); then the stem layer's own median
in each (decaf.profile, 5 passes). Prints Markdown tables and the CPU.
"""
import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

from bench_common import cpu_name, best_time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KNOB = "DECAF_STEM_CONV"

# (net, K, activation as conv_forward's act=)
LAYERS = [("mobilenet_v2", 32, ("clamp", 0.0, 6.0, 0.0)), ("mobilenet_v3", 16, ("hardswish", 0.0, 0.0, 0.0)),
          ("shufflenet_v2", 24, ("clamp", 0.0, float("inf"), 0.0)), ("efficientnet_b0", 32, ("silu", 0.0, 0.0, 1.0))]
# other few-channel 3x3 convolutions the plan's rule was measured on: (what, H = W, K, stride, activation)
OTHERS = [("cifar_resnet", 32, 16, 1, ("clamp", 0.0, float("inf"), 0.0)),
          ("small_stride2", 32, 32, 2, ("clamp", 0.0, 6.0, 0.0)),
          ("vgg_like", 224, 64, 1, ("clamp", 0.0, float("inf"), 0.0)),
          ("stride1_224", 224, 32, 1, ("clamp", 0.0, float("inf"), 0.0))]


# the 7x7 stems: (nets, K, activation)
WIDE = [("resnet_googlenet_densenet", 64, ("clamp", 0.0, float("inf"), 0.0))]


def geometry(stride, ks=3):
    p = ks // 2
    return (ks, ks), (stride, stride), (p, p, p, p), (1, 1)


def with_knob(value, fn):
    """fn() with the environment variable KNOB set to value (restored after)."""
    before = os.environ.get(KNOB)
    os.environ[KNOB] = value
    try:
        return fn()
    finally:
        if before is None:
            del os.environ[KNOB]
        else:
            os.environ[KNOB] = before


def prepared(kernels, compiled, x, w, bias, act, knob, stride):
    """(call, y, plan) for conv_forward prepared with the plan made under KNOB=knob."""
    B, H, ks = x.shape[0], x.shape[2], w.shape[2]
    Ho = (H + 2 * (ks // 2) - ks) // stride + 1
    y = np.empty((B, w.shape[0], Ho, Ho), np.float32)
    geom = geometry(stride, ks)

    def make():
        plan = compiled.conv_plan(x.shape, w.shape, 1, *geom, (Ho, Ho))
        work = np.empty(max(plan["work"], 1), np.float32)
        return kernels.prepare_conv_forward(x, w, bias, y, work, *geom, 1, act=act), plan
    call, plan = with_knob(knob, make)
    return call, y, plan


def bench_layer(kernels, compiled, K, act, batch, rounds, min_time, H=224, stride=2, ks=3):
    rng = np.random.default_rng(K * batch)
    x = rng.standard_normal((batch, 3, H, H)).astype(np.float32)
    w = (rng.standard_normal((K, 3, ks, ks)) / np.sqrt(3 * ks * ks)).astype(np.float32)
    bias = rng.standard_normal(K).astype(np.float32)
    old, y_old, plan_old = prepared(kernels, compiled, x, w, bias, act, "off", stride)
    new, y_new, plan_new = prepared(kernels, compiled, x, w, bias, act, "on", stride)
    assert not plan_old["stem"] and plan_new["stem"], (plan_old, plan_new)
    old.run()
    new.run()
    np.testing.assert_allclose(y_new, y_old, rtol=1e-5, atol=1e-5 * float(np.abs(y_old).max()))
    t_old = t_new = float("inf")
    for _ in range(rounds):
        t_old = min(t_old, best_time(old.run, min_time))
        t_new = min(t_new, best_time(new.run, min_time))
    flops = 2.0 * y_new.size * 3 * ks * ks
    return {"old_ms": t_old * 1e3, "new_ms": t_new * 1e3, "old_gflops": flops / t_old / 1e9,
            "new_gflops": flops / t_new / 1e9, "ratio": t_old / t_new}


def bench_nets(paths, batches, forwards, threads):
    import decaf
    from decaf.profile import profile
    results = []
    decaf.set_num_threads(threads)
    for path in paths:
        for batch in batches:
            x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
            nets = {}
            for knob in ("off", "on"):   # each copy's layers plan on their first forward
                net = decaf.load(path)
                with_knob(knob, lambda: [net.forward(data=x) for _ in range(2)])
                nets[knob] = net
            out_old, out_new = nets["off"].forward(data=x), nets["on"].forward(data=x)
            for name in out_old:   # (the nets' outputs: float32 sums in another order in the stem)
                scale = float(np.abs(out_old[name]).max())
                np.testing.assert_allclose(out_new[name], out_old[name], rtol=1e-3, atol=1e-3 * scale)
            best = {"off": float("inf"), "on": float("inf")}
            for _ in range(forwards):
                for knob in ("off", "on"):
                    time.sleep(0.02)
                    t = time.perf_counter()
                    nets[knob].forward(data=x)
                    best[knob] = min(best[knob], time.perf_counter() - t)
            stem = {}   # the first layer's (the stem's) median in the net, from decaf.profile
            for knob in ("off", "on"):
                prof = with_knob(knob, lambda: profile(nets[knob], batch=batch, iters=5, warmup=1, threads=threads,
                                                       progress=False))
                stem[knob] = prof.layers[0].forward_ms
            r = {"net": os.path.basename(path), "batch": batch, "threads": threads, "old_ms": best["off"] * 1e3,
                 "new_ms": best["on"] * 1e3, "ratio": best["off"] / best["on"], "stem_old_ms": stem["off"],
                 "stem_new_ms": stem["on"]}
            print(f"| {r['net']} | {batch} | {threads} | {r['old_ms']:.2f} | {r['new_ms']:.2f} | {r['ratio']:.3f} "
                  f"| {stem['off']:.3f} / {stem['on']:.3f} |", flush=True)
            results.append(r)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.03, help="seconds of calls per timing")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--nets", nargs="*", default=[], help=".decaf files to time whole")
    parser.add_argument("--net-batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--net-threads", type=int, default=2)
    parser.add_argument("--forwards", type=int, default=10)
    parser.add_argument("--skip-layers", action="store_true")
    parser.add_argument("--others", action="store_true", help="also the OTHERS geometries (stride 1, small)")
    parser.add_argument("--wide", action="store_true", help="also the 7x7 stems (WIDE)")
    parser.add_argument("--json", help="write the results here (default: benchmarks/results_stem_<date>.json)")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    import decaf.blas  # noqa: F401  (loads the SGEMM the im2col + GEMM path calls)
    from decaf import cpu, kernels
    from decaf.kernels import _compiled
    from decaf.threads import using_threads

    print(f"CPU: {cpu_name()}; kernel variant {cpu.get_isa()}")
    results = {"cpu": cpu_name(), "isa": cpu.get_isa(), "layers": [], "nets": []}
    def table(header, cases):
        """Each case (its first cells, bench_layer's keyword arguments, what its record adds) at every
        batch size and thread count: a Markdown table."""
        print("| " + " | ".join(header + ["batch", "threads", "before ms", "stem ms", "GFLOP/s old / new", "ratio"])
              + " |")
        print("|" + "---|" * (len(header) + 6))
        for cells, kw, record in cases:
            for batch in args.batches:
                for threads in args.threads:
                    with using_threads(threads):
                        r = bench_layer(kernels, _compiled, batch=batch, rounds=args.rounds, min_time=args.min_time,
                                        **kw)
                    r.update(record, batch=batch, threads=threads)
                    results["layers"].append(r)
                    print("| " + " | ".join(cells + [str(batch), str(threads), f"{r['old_ms']:.3f}", f"{r['new_ms']:.3f}",
                                                     f"{r['old_gflops']:.0f} / {r['new_gflops']:.0f}",
                                                     f"{r['ratio']:.2f}"]) + " |", flush=True)

    # (before: im2col + GEMM for the 3x3 layers, the direct kernel for the 7x7 ones)
    if not args.skip_layers:
        table(["stem", "K", "act"], [([net, str(K), act[0]], {"K": K, "act": act}, {"net": net, "K": K, "act": act[0]})
                                     for net, K, act in LAYERS])
    if args.others:
        table(["layer", "H", "K", "stride"],
              [([what, str(H), str(K), str(stride)], {"K": K, "act": act, "H": H, "stride": stride},
                {"net": what, "H": H, "K": K, "stride": stride, "act": act[0]}) for what, H, K, stride, act in OTHERS])
    if args.wide:
        table(["7x7 stem", "K", "act"], [([what, str(K), act[0]], {"K": K, "act": act, "ks": 7},
                                          {"net": what, "K": K, "ks": 7, "act": act[0]}) for what, K, act in WIDE])
    if args.nets:
        print("| net | batch | threads | net ms, im2col+GEMM stem | net ms, stem kernel | ratio | stem layer ms in the net |")
        print("|---|---|---|---|---|---|---|")
        results["nets"] = bench_nets(args.nets, args.net_batches, args.forwards, args.net_threads)
    out = args.json or os.path.join(ROOT, "benchmarks", f"results_stem_{datetime.date.today()}.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"(written to {out})")


if __name__ == "__main__":
    main()
