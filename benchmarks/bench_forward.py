"""CaffeNet forward (batch 1, 10, 50) and a training step (batch 64): decaf vs PyTorch CPU and ONNX Runtime.

All frameworks run in this one process on the same machine with the same thread count, the
same random weights and inputs. The runs are interleaved: for each measure, every framework
runs once per round, for ``--repeats`` rounds after a warm-up round, and each figure is the
best of its rounds. ``--gap`` seconds of sleep separate two runs, so that no framework's threads
still spin when the next starts. A machine whose speed drifts (shared cores, memory bandwidth) then moves
all frameworks alike instead of favouring whichever ran in a quiet minute. Ratios are decaf's
speed divided by the other framework's (> 1: decaf is faster).

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


def torch_runners(params, threads, fmt):
    """{measure: (images, callable)} for PyTorch in layout fmt ("nchw" or "channels_last")."""
    import torch
    torch.set_num_threads(threads)
    cl = fmt == "channels_last"
    model = torch_model(torch, params, cl).eval()
    runners = {}
    for b in FORWARD_BATCHES:
        x = torch.randn(b, 3, 227, 227)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)

        def forward(x=x):
            with torch.inference_mode():
                torch.softmax(model(x), 1)
        runners[f"forward_b{b}"] = (b, forward)
    trained = torch_model(torch, params, cl).train()
    opt = torch.optim.SGD(trained.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(TRAIN_BATCH, 3, 227, 227)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (TRAIN_BATCH,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(trained(x), y).backward()
        opt.step()
    runners[f"train_b{TRAIN_BATCH}"] = (TRAIN_BATCH, step)
    return runners


def onnxruntime_runners(net, threads):
    """{measure: (images, callable)} for ONNX Runtime on decaf's CaffeNet exported to ONNX."""
    import onnxruntime as ort
    from decaf.io.onnx_convert import net_to_onnx
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "caffenet.onnx")
        net_to_onnx(net, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    runners = {}
    for b in FORWARD_BATCHES:
        x = np.random.default_rng(0).standard_normal((b, 3, 227, 227)).astype(np.float32)
        runners[f"forward_b{b}"] = (b, lambda x=x: sess.run(None, {name: x}))
    return runners


def run_interleaved(frameworks, repeats, gap=0.02):
    """{framework: {measure: images/s}}: per measure, one warm-up round, then `repeats` rounds in
    which every framework runs once; the best round of each framework counts. Between two runs
    the process sleeps `gap` seconds, so that no framework's threads are still spinning (waiting
    for more work) when the next one starts."""
    measures = []
    for runners in frameworks.values():
        measures += [m for m in runners if m not in measures]
    best = {fw: {} for fw in frameworks}
    for measure in measures:
        entrants = {fw: r[measure] for fw, r in frameworks.items() if measure in r}
        for _, fn in entrants.values():
            fn()                                   # warm-up (and first-call allocations)
        for _ in range(repeats):
            for fw, (images, fn) in entrants.items():
                time.sleep(gap)
                t = time.perf_counter()
                fn()
                rate = images / (time.perf_counter() - t)
                best[fw][measure] = max(best[fw].get(measure, 0.0), rate)
        print(f"{measure}: " + ", ".join(f"{fw} {best[fw][measure]:.1f}" for fw in entrants) + " img/s",
              file=sys.stderr)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gap", type=float, default=0.02, help="seconds of sleep between two timed runs")
    ap.add_argument("--skip", nargs="*", default=[], help="frameworks to skip: torch onnxruntime train")
    args = ap.parse_args()

    from threadpoolctl import threadpool_limits
    threadpool_limits(args.threads)
    decaf.kernels.set_num_threads(args.threads)

    net = decaf.Net(get_spec("caffenet"), seed=0)
    params = net.param_arrays()
    results = {"threads": args.threads, "blas": blas_info(), "machine": platform.processor() or platform.machine(),
               "gflop_per_image": GFLOP_PER_IMAGE, "repeats": args.repeats, "interleaved": True, "gap_s": args.gap}
    decaf_runs = {}
    for b in FORWARD_BATCHES:
        x = np.random.default_rng(0).standard_normal((b, 3, 227, 227)).astype(np.float32)
        decaf_runs[f"forward_b{b}"] = (b, decaf_forward(net, x))
    if "train" not in args.skip:
        decaf_runs[f"train_b{TRAIN_BATCH}"] = (TRAIN_BATCH, decaf_train_step(args.threads))
    frameworks = {"decaf": decaf_runs}
    if "onnxruntime" not in args.skip:
        try:
            frameworks["onnxruntime"] = onnxruntime_runners(net, args.threads)
        except ImportError as exc:
            results["onnxruntime"] = f"not available ({exc})"
    if "torch" not in args.skip:
        try:
            for fmt in ("nchw", "channels_last"):
                runners = torch_runners(params, args.threads, fmt)
                if "train" in args.skip:
                    runners = {k: v for k, v in runners.items() if not k.startswith("train")}
                frameworks[f"torch_{fmt}"] = runners
        except ImportError:
            results["torch"] = "not installed"
    results.update(run_interleaved(frameworks, args.repeats, args.gap))

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
