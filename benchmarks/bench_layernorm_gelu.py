"""The compiled LayerNorm-over-channels and GELU kernels against the NumPy code the layers ran before,
and ONNX Runtime's LayerNormalization / Gelu, on ConvNeXt-Tiny's shapes, in one process.

    flock /tmp/decaf-bench.lock python benchmarks/bench_layernorm_gelu.py [--rounds 3] [--min-time 0.05]
        [--batches 1 16] [--threads 2] [--no-ort] [--json OUT]

LayerNorm over C of (B, 96, 56, 56), (B, 192, 28, 28), (B, 384, 14, 14), (B, 768, 7, 7):
  old: the NumPy forward LayerNorm had (mean, centre, variance, xhat, affine: several passes);
  new: kernels.layernorm on the (B, C, H W) view (csrc/layernorm.c);
  ort: ONNX Runtime's LayerNormalization over the last axis of the same values in NHWC (its layout
       for this op; the transposes are not timed).
GELU over (B, 384, 56, 56), (B, 768, 28, 28), (B, 1536, 14, 14), (B, 3072, 7, 7):
  old: GELU.forward's former code (kernels.erf of x / sqrt 2, then NumPy: (erf + 1) * 0.5 * x);
  new: kernels.gelu (csrc/elementwise.c);
  ort: ONNX Runtime's Gelu (opset 20).
Each contestant writes into an output allocated once; they take turns, best of --rounds rounds of
--min-time seconds each; the outputs are compared first. ratio = old / new (> 1: the kernel is
faster), ort / new likewise. "convnext_tiny" sums the layers as ConvNeXt-Tiny has them (LayerNorm:
5, 4, 10, 3 of the four shapes, plus one on (B, 768, 1, 1) not timed here; GELU: 3, 3, 9, 3).
"""
import argparse
import datetime
import json
import math
import os
import sys

import numpy as np

from bench_common import best_time, cpu_name  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERNORM_SHAPES = [((96, 56, 56), 5), ((192, 28, 28), 4), ((384, 14, 14), 10), ((768, 7, 7), 3)]
GELU_SHAPES = [((384, 56, 56), 3), ((768, 28, 28), 3), ((1536, 14, 14), 9), ((3072, 7, 7), 3)]
EPS = 1e-6


def old_layernorm(x, gamma, beta, y):
    """LayerNorm.forward's former NumPy code over axis 1 of (B, C, H, W) (it kept xhat for backward)."""
    centred = x - x.mean(axis=(1,), keepdims=True)
    var = np.mean(centred * centred, axis=(1,), keepdims=True)
    inv_std = 1 / np.sqrt(var + np.asarray(EPS, x.dtype))
    xhat = centred * inv_std
    np.multiply(xhat, gamma.reshape(-1, 1, 1), out=y)
    y += beta.reshape(-1, 1, 1)


def old_gelu(kernels, x, y):
    """GELU.forward's former code: the compiled erf, then NumPy."""
    gate = np.empty_like(x)
    kernels.erf((x * np.asarray(1 / math.sqrt(2), x.dtype)).reshape(-1), gate.reshape(-1))
    np.multiply(x, (gate + 1) * np.asarray(0.5, x.dtype), out=y)


def ort_session(op, shape, threads, consts=(), attrs=None, opset=17):
    """An ONNX Runtime session of one node `op` on "x" of `shape` (and initializers), or None."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    inits = [numpy_helper.from_array(v, name) for name, v in consts]
    node = helper.make_node(op, ["x"] + [name for name, _ in consts], ["y"], **(attrs or {}))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def ort_call(session, x, y):
    """A call writing ONNX Runtime's output into y (bound once: no allocation per call)."""
    binding = session.io_binding()
    binding.bind_cpu_input("x", x)
    binding.bind_output("y", "cpu", element_type=np.float32, shape=y.shape, buffer_ptr=y.ctypes.data)
    return lambda: session.run_with_iobinding(binding)


def race(calls, rounds, min_time):
    """{name: best seconds per call}, the contestants taking turns."""
    best = {name: float("inf") for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            best[name] = min(best[name], best_time(fn, min_time))
    return best


def bench_layernorm(kernels, shape, batch, threads, rounds, min_time, use_ort):
    rng = np.random.default_rng(batch)
    C, H, W = shape
    x = (rng.standard_normal((batch,) + shape) * 2 + 0.5).astype(np.float32)
    gamma = (1 + 0.1 * rng.standard_normal(C)).astype(np.float32)
    beta = (0.1 * rng.standard_normal(C)).astype(np.float32)
    y_old, y_new = np.empty_like(x), np.empty_like(x)
    mean, inv_std = np.empty((batch, H * W), np.float32), np.empty((batch, H * W), np.float32)
    view = (batch, C, H * W)
    calls = {"old": lambda: old_layernorm(x, gamma, beta, y_old),
             "new": lambda: kernels.layernorm(x.reshape(view), gamma, beta, EPS, y_new.reshape(view), mean, inv_std)}
    session = ort_session("LayerNormalization", [batch, H, W, C], threads, [("scale", gamma), ("bias", beta)],
                          {"axis": -1, "epsilon": EPS}) if use_ort else None
    if session is not None:
        x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        y_ort = np.empty_like(x_nhwc)
        calls["ort"] = ort_call(session, x_nhwc, y_ort)
    for fn in calls.values():
        fn()
    scale = float(np.abs(y_old).max())
    np.testing.assert_allclose(y_new, y_old, rtol=0, atol=1e-5 * scale)
    if session is not None:
        np.testing.assert_allclose(y_ort.transpose(0, 3, 1, 2), y_new, rtol=0, atol=1e-5 * scale)
    return race(calls, rounds, min_time)


def bench_gelu(kernels, shape, batch, threads, rounds, min_time, use_ort):
    x = (np.random.default_rng(batch).standard_normal((batch,) + shape) * 2).astype(np.float32)
    y_old, y_new = np.empty_like(x), np.empty_like(x)
    flat_x, flat_y = x.reshape(-1), y_new.reshape(-1)
    calls = {"old": lambda: old_gelu(kernels, x, y_old), "new": lambda: kernels.gelu(flat_x, flat_y)}
    session = ort_session("Gelu", list(x.shape), threads, opset=20) if use_ort else None
    if session is not None:
        y_ort = np.empty_like(x)
        calls["ort"] = ort_call(session, x, y_ort)
    for fn in calls.values():
        fn()
    scale = float(np.abs(x).max())
    np.testing.assert_allclose(y_new, y_old, rtol=0, atol=1e-6 * scale)
    if session is not None:
        np.testing.assert_allclose(y_ort, y_new, rtol=0, atol=1e-5 * scale)
    return race(calls, rounds, min_time)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.05, help="seconds of calls per timing")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-ort", action="store_true", help="leave ONNX Runtime out")
    parser.add_argument("--json", help="write the results here (default: "
                                       "benchmarks/results_layernorm_gelu_<date>.json)")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    import decaf
    from decaf import cpu, kernels

    decaf.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}; kernel variant {cpu.get_isa()}; {args.threads} threads")
    results = {"cpu": cpu_name(), "isa": cpu.get_isa(), "threads": args.threads, "rounds": args.rounds,
               "min_time": args.min_time, "layers": [], "convnext_tiny": []}
    print("| op | shape | batch | old ms | new ms | ort ms | old / new | ort / new |")
    print("|---|---|---|---|---|---|---|---|")
    for op, shapes, bench in (("LayerNorm", LAYERNORM_SHAPES, bench_layernorm), ("GELU", GELU_SHAPES, bench_gelu)):
        for batch in args.batches:
            total = {}
            for shape, count in shapes:
                best = bench(kernels, shape, batch, args.threads, args.rounds, args.min_time, not args.no_ort)
                ms = {name: t * 1e3 for name, t in best.items()}
                r = {"op": op, "shape": [batch, *shape], "batch": batch, "count_in_convnext_tiny": count,
                     **{f"{name}_ms": v for name, v in ms.items()}, "ratio_old_new": ms["old"] / ms["new"]}
                if "ort" in ms:
                    r["ratio_ort_new"] = ms["ort"] / ms["new"]
                results["layers"].append(r)
                for name, v in ms.items():
                    total[name] = total.get(name, 0.0) + count * v
                ort_txt = (f"{ms['ort']:.3f}", f"{r['ratio_ort_new']:.2f}") if "ort" in ms else ("-", "-")
                print(f"| {op} | {tuple(r['shape'])} | {batch} | {ms['old']:.3f} | {ms['new']:.3f} | {ort_txt[0]} "
                      f"| {r['ratio_old_new']:.2f} | {ort_txt[1]} |", flush=True)
            t = {"op": op, "batch": batch, **{f"{name}_ms": v for name, v in total.items()}}
            results["convnext_tiny"].append(t)
            print(f"| {op}, ConvNeXt-Tiny's {sum(c for _, c in shapes)} | all | {batch} | {total['old']:.2f} | "
                  f"{total['new']:.2f} | {total.get('ort', float('nan')):.2f} | {total['old'] / total['new']:.2f} | "
                  f"{total.get('ort', float('nan')) / total['new']:.2f} |", flush=True)
    out = args.json or os.path.join(ROOT, "benchmarks", f"results_layernorm_gelu_{datetime.date.today()}.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"(written to {out})")


if __name__ == "__main__":
    main()
