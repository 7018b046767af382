"""CaffeNet forward (batch 1, 10, 50) and a training step (batch 64): decaf vs PyTorch CPU and ONNX Runtime.

All frameworks run in this one process on the same machine with the same thread count, the
same random weights and inputs; each figure is the best of ``--repeats`` timed runs after a
warm-up. Ratios are decaf's speed divided by the other framework's (> 1: decaf is faster).

    python benchmarks/bench_forward.py --json out.json [--threads 2] [--repeats 5]
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout
import decaf  # noqa: E402
from decaf.blas import blas_info  # noqa: E402
from decaf.models import get_spec  # noqa: E402

GFLOP_PER_IMAGE = 1.449      # 2 x 724,406,816 MACs (../shared/facts/models.md)
FORWARD_BATCHES = (1, 10, 50)
TRAIN_BATCH = 64


def best_time(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def decaf_forward(net, x):
    return lambda: net.forward(data=x, outputs=["prob"])


def decaf_train_step(threads):
    from decaf.solvers import SGD
    net = decaf.Net(get_spec("caffenet", with_loss=True), phase="train", seed=1)
    solver = SGD(net, lr=0.001, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((TRAIN_BATCH, 3, 227, 227)).astype(np.float32)
    y = rng.integers(0, 1000, TRAIN_BATCH)

    def step():
        net.forward(data=x, label=y, outputs=["loss"])
        net.backward()
        solver.step()
    return step


def torch_model(torch, params, channels_last=False):
    nn = torch.nn

    class CaffeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 96, 11, 4)
            self.conv2 = nn.Conv2d(96, 256, 5, 1, 2, groups=2)
            self.conv3 = nn.Conv2d(256, 384, 3, 1, 1)
            self.conv4 = nn.Conv2d(384, 384, 3, 1, 1, groups=2)
            self.conv5 = nn.Conv2d(384, 256, 3, 1, 1, groups=2)
            self.fc6, self.fc7, self.fc8 = nn.Linear(9216, 4096), nn.Linear(4096, 4096), nn.Linear(4096, 1000)
            self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.lrn = nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            r = torch.relu
            x = self.lrn(self.pool(r(self.conv1(x))))
            x = self.lrn(self.pool(r(self.conv2(x))))
            x = r(self.conv5(r(self.conv4(r(self.conv3(x))))))
            x = self.pool(x).flatten(1)
            x = self.drop(r(self.fc6(x)))
            x = self.drop(r(self.fc7(x)))
            return self.fc8(x)

    model = CaffeNet()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(params[name]))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def bench_torch(results, params, threads, repeats):
    try:
        import torch
    except ImportError:
        results["torch"] = "not installed"
        return
    torch.set_num_threads(threads)
    for fmt in ("nchw", "channels_last"):
        cl = fmt == "channels_last"
        model = torch_model(torch, params, cl).eval()
        entry = {}
        for b in FORWARD_BATCHES:
            x = torch.randn(b, 3, 227, 227)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                t = best_time(lambda: torch.softmax(model(x), 1), repeats)
            entry[f"forward_b{b}"] = b / t
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
        x = torch.randn(TRAIN_BATCH, 3, 227, 227)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (TRAIN_BATCH,))

        def step():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        entry[f"train_b{TRAIN_BATCH}"] = TRAIN_BATCH / best_time(step, max(2, repeats // 2))
        results[f"torch_{fmt}"] = entry
        print(f"torch {fmt}: {fmt_entry(entry)}", file=sys.stderr)


def bench_onnxruntime(results, net, threads, repeats):
    try:
        import onnxruntime as ort
        from decaf.io.onnx_convert import net_to_onnx
    except ImportError as exc:
        results["onnxruntime"] = f"not available ({exc})"
        return
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "caffenet.onnx")
        net_to_onnx(net, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    entry = {}
    for b in FORWARD_BATCHES:
        x = np.random.default_rng(0).standard_normal((b, 3, 227, 227)).astype(np.float32)
        entry[f"forward_b{b}"] = b / best_time(lambda: sess.run(None, {name: x}), repeats)
    results["onnxruntime"] = entry
    print(f"onnxruntime: {fmt_entry(entry)}", file=sys.stderr)


def fmt_entry(entry):
    return ", ".join(f"{k} {v:.1f} img/s" for k, v in entry.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip", nargs="*", default=[], help="frameworks to skip: torch onnxruntime train")
    args = ap.parse_args()

    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    decaf.kernels.set_num_threads(args.threads)

    net = decaf.Net(get_spec("caffenet"), seed=0)
    params = net.param_arrays()
    results = {"threads": args.threads, "blas": blas_info(), "machine": platform.processor() or platform.machine(),
               "gflop_per_image": GFLOP_PER_IMAGE, "decaf": {}}
    for b in FORWARD_BATCHES:
        x = np.random.default_rng(0).standard_normal((b, 3, 227, 227)).astype(np.float32)
        results["decaf"][f"forward_b{b}"] = b / best_time(decaf_forward(net, x), args.repeats)
    if "train" not in args.skip:
        results["decaf"][f"train_b{TRAIN_BATCH}"] = TRAIN_BATCH / best_time(
            decaf_train_step(args.threads), max(2, args.repeats // 2))
    print(f"decaf: {fmt_entry(results['decaf'])}", file=sys.stderr)
    if "onnxruntime" not in args.skip:
        bench_onnxruntime(results, net, args.threads, args.repeats)
    if "torch" not in args.skip:
        bench_torch(results, params, args.threads, args.repeats)

    rows = []
    for key, ours in results["decaf"].items():
        row = {"measure": key, "decaf_img_s": round(ours, 2),
               "decaf_gflops": round(ours * GFLOP_PER_IMAGE * (3 if key.startswith("train") else 1), 1)}
        for other in ("onnxruntime", "torch_nchw", "torch_channels_last"):
            theirs = results.get(other)
            if isinstance(theirs, dict) and key in theirs:
                row[f"{other}_img_s"] = round(theirs[key], 2)
                row[f"ratio_vs_{other}"] = round(ours / theirs[key], 3)
        rows.append(row)
    results["table"] = rows
    print(f"\nCaffeNet, {args.threads} threads, BLAS: {results['blas']}")
    for row in rows:
        print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
