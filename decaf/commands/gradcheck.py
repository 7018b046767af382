"""decaf gradcheck: finite-difference checks of one layer type or of a whole model.

    decaf gradcheck LAYER_TYPE [--params JSON] [--shape N,C,H,W ...]
    decaf gradcheck MODEL            (a zoo name, a spec .json file, inline JSON or a .decaf file)

The checks are ``decaf.gradcheck.check_layer`` / ``check_net``: float64, central differences,
one line per checked array (inputs and parameters) with the largest absolute and relative error.
Exit code 0 when every array passes, 1 otherwise.
"""
import inspect
import json
import math
import os
import re
import sys

EXAMPLE = """examples:
  decaf gradcheck ReLU
  decaf gradcheck Convolution --params '{"num_output": 3, "kernel_size": 3}' --shape 2,3,7,7
  decaf gradcheck SoftmaxWithLoss --shape 4,5 --shape 4
  decaf gradcheck Dropout --phase train
  decaf gradcheck lenet
  decaf gradcheck caffenet --samples 10 --json
A layer type that needs parameters or several bottoms has defaults (see --params and --shape to
override them). Zoo models whose spec takes an input_size are checked at the smallest input size
the net accepts (--input-size to choose), with a random sample of elements per parameter."""

# Bottom shape when neither the command line nor the layer type (Layer.gradcheck_case) gives one.
DEFAULT_SHAPE = (2, 3, 4, 4)
MODEL_SAMPLES = 20      # elements checked per array of a zoo model (every element when smaller)
LAYER_SAMPLES = 60


def add_parser(sub):
    import argparse
    p = sub.add_parser("gradcheck", help="check backward against finite differences",
                       description=__doc__.split("\n\n")[0], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="LAYER_TYPE|MODEL",
                   help="a layer type (e.g. Convolution), a zoo model, a spec .json, inline JSON or a .decaf file")
    p.add_argument("--params", default=None, metavar="JSON",
                   help="layer parameters as JSON, merged over the type's defaults")
    p.add_argument("--shape", action="append", default=None, metavar="N,C,H,W",
                   help="a bottom's full shape (with batch); repeat once per bottom")
    p.add_argument("--phase", choices=("train", "test"), default="test",
                   help="train enables dropout masks and batch statistics (default test)")
    p.add_argument("--batch", type=int, default=2, help="batch size for a model check (default 2)")
    p.add_argument("--input-size", type=int, default=None,
                   help="input size for zoo models that take one (default: the smallest that builds)")
    p.add_argument("--samples", type=int, default=None,
                   help=f"elements checked per array (default {LAYER_SAMPLES} for a layer, "
                        f"{MODEL_SAMPLES} for a model with a reduced input, {LAYER_SAMPLES} otherwise)")
    p.add_argument("--keep-init", action="store_true",
                   help="keep the spec's own weight fillers (default for a spec: He-scaled random weights and biases, "
                        "so that activations stay O(1) and few ReLU kinks lie within eps)")
    p.add_argument("--eps", type=float, default=1e-6, help="finite-difference step (default 1e-6)")
    p.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    p.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance (default 1e-6)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and samples (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return p


# ---- MODEL arguments (shared with `decaf draw`) ----------------------------------------------

def is_layer_type(name):
    import decaf.layers  # noqa: F401  (registers every layer type)
    from ..layer import LAYERS
    return name in LAYERS


def model_spec(model, **kw):
    """The spec named by a MODEL argument, and a Net when the argument was a .decaf file (else None).

    MODEL: a zoo name (``kw`` go to its spec function), a spec ``.json`` file, inline JSON, or a
    ``.decaf`` file (whose net carries trained weights)."""
    from ..models import ZOO
    if model in ZOO:
        return ZOO[model](**kw), None
    text = str(model).strip()
    if text.startswith("{"):
        try:
            return json.loads(text), None
        except json.JSONDecodeError as exc:
            raise ValueError(f"the inline JSON spec is not valid JSON: {exc}") from None
    if text.endswith(".decaf"):
        from ..io.netfile import load
        net = load(text)
        return net.spec, net
    if os.path.exists(text):
        from ..io.netfile import read_spec_json
        return read_spec_json(text), None
    raise ValueError(f"{model!r} is not a layer type, a zoo model ({', '.join(sorted(ZOO))}), "
                     "a spec .json file, inline JSON or a .decaf file")


def smallest_input_size(spec_fn, upto):
    """The smallest input_size in [8, upto] for which the zoo spec builds (upto if none does)."""
    from ..errors import ShapeError
    from ..net import Net
    for size in range(8, upto):
        try:
            Net(spec_fn(input_size=size), init=False)
        except ShapeError:
            continue
        return size
    return upto


# ---- the checks ------------------------------------------------------------------------------

def parse_shape(text):
    """"2,3,7,7" (or "2x3x7x7") -> (2, 3, 7, 7)."""
    parts = re.split(r"[,x]", text.strip())
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--shape {text!r}: expected positive integers separated by commas, such as 2,3,7,7")
    return tuple(int(p) for p in parts)


def layer_case(type_name, params_json, shape_args):
    """(layer spec, bottom shapes, label classes) for ``decaf gradcheck LAYER_TYPE``."""
    from ..layer import LAYERS
    params, shapes = LAYERS[type_name].gradcheck_case or ({}, None)
    params = dict(params)
    if params_json:
        try:
            given = json.loads(params_json)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--params is not valid JSON ({exc}): {params_json!r}") from None
        if not isinstance(given, dict):
            raise ValueError(f"--params must be a JSON object, got {params_json!r}")
        params.update(given)
    if shape_args:
        shapes = [parse_shape(s) for s in shape_args]
    elif shapes is None:
        n_bottom = getattr(LAYERS[type_name], "n_bottom", 1)
        count = n_bottom if isinstance(n_bottom, int) else max(n_bottom[0], 1)
        shapes = [DEFAULT_SHAPE] * count
    spec = dict(params, type=type_name, name=params.get("name", type_name.lower()))
    label_classes = None
    if "classifier_loss" in LAYERS[type_name].roles:
        spec.setdefault("bottom", ["scores", "label"])
        label_classes = shapes[0][1] if len(shapes[0]) > 1 else 2
    return spec, shapes, label_classes


def model_inputs(net, batch, seed):
    """Random inputs for every input blob: standard normal data, integer labels below the class
    count of the loss that reads them."""
    import numpy as np
    rng = np.random.default_rng(seed + 1)
    inputs = {}
    for name, shape in net.input_shapes.items():
        if "label" in name:
            classes = 2
            for layer in net.order:
                if "classifier_loss" in layer.roles and net.blobs[name] in net.bottoms[layer.name]:
                    classes = net.bottoms[layer.name][0].shape[1]
            inputs[name] = rng.integers(0, classes, (batch,) + shape).astype(np.float64)
        else:
            inputs[name] = rng.standard_normal((batch,) + shape)
    return inputs


def he_init(net, seed=0):
    """Re-fill every learnable parameter with gaussians that keep activations O(1): weights with
    std sqrt(2 / fan_in), vectors (biases, scales) with std 0.1 (around 1 for the vectors a layer
    multiplies by, ``Layer.unit_params``: BatchNorm's and Scale's weights).

    Why: a zoo spec's Caffe fillers (std 0.01, zero biases) shrink the activations layer by layer;
    deep in the net they are ~1e-6, as small as the finite-difference step, so a step moves many
    of them across a ReLU kink and the numeric gradient is wrong although backward is right."""
    import numpy as np
    rng = np.random.default_rng(seed + 2)
    for layer in net.order:
        for p in layer.blobs:
            if not p.learnable:
                continue
            if p.data.ndim >= 2:
                p.data[...] = rng.standard_normal(p.shape) * np.sqrt(2.0 / max(p.data[0].size, 1))
            elif p.name[len(layer.name) + 1:] in layer.unit_params:
                p.data[...] = 1 + 0.1 * rng.standard_normal(p.shape)
            else:
                p.data[...] = 0.1 * rng.standard_normal(p.shape)


def check_model(model, batch=2, input_size=None, samples=None, phase="test", seed=0,
                eps=1e-6, rtol=1e-4, atol=1e-6, keep_init=False):
    """(report, notes) for ``decaf gradcheck MODEL``; notes say what was reduced."""
    from ..gradcheck import check_net
    from ..models import ZOO
    from ..net import Net
    notes = []
    kw = {}
    reduced = False
    if model in ZOO and "input_size" in inspect.signature(ZOO[model]).parameters:
        full = inspect.signature(ZOO[model]).parameters["input_size"].default
        size = input_size or smallest_input_size(ZOO[model], full)
        kw["input_size"] = size
        reduced = size < full
        if reduced:
            notes.append(f"input size reduced from {full} to {size} (--input-size to choose)")
    elif input_size:
        raise ValueError(f"--input-size: model {model!r} has no input_size to change")
    spec, net = model_spec(model, **kw)
    if net is not None:
        notes.append("weights from the file")
    else:
        net = Net(spec, phase=phase, seed=seed, force_backward=True)
        if not keep_init:
            he_init(net, seed)
            notes.append("He-scaled random weights (--keep-init for the spec's fillers)")
    if samples is None:
        samples = MODEL_SAMPLES if reduced else LAYER_SAMPLES
    notes.append(f"batch {batch}, phase {phase}, up to {samples} sampled elements per array")
    report = check_net(net, model_inputs(net, batch, seed), eps=eps, rtol=rtol, atol=atol,
                       max_elements=samples, seed=seed, phase=phase)
    return report, notes


def report_dict(target, report, notes):
    from dataclasses import asdict
    return {"target": target, "passed": report.passed, "eps": report.eps, "rtol": report.rtol,
            "atol": report.atol, "notes": notes, "results": [asdict(r) for r in report.results]}


def run(args):
    from ..gradcheck import check_layer
    if args.samples is not None and args.samples < 1:
        raise ValueError("--samples must be at least 1")
    if args.batch < 1:
        raise ValueError("--batch must be at least 1")
    # (eps 0 divided by zero deep in the check; a negative or non-finite one means nothing)
    if not (math.isfinite(args.eps) and args.eps > 0):
        raise ValueError(f"--eps must be a positive finite number, got {args.eps}")
    for name in ("rtol", "atol"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) >= 0):
            raise ValueError(f"--{name} must be a non-negative finite number, got {getattr(args, name)}")
    tolerances = {"eps": args.eps, "rtol": args.rtol, "atol": args.atol}
    if is_layer_type(args.target):
        spec, shapes, classes = layer_case(args.target, args.params, args.shape)
        report = check_layer(spec, shapes, seed=args.seed, phase=args.phase, label_classes=classes,
                             max_elements=args.samples or LAYER_SAMPLES, **tolerances)
        notes = [f"layer {json.dumps(spec)}", "bottoms " + ", ".join("x".join(map(str, s)) for s in shapes)
                 + f", phase {args.phase}"]
    else:
        if args.params or args.shape:
            raise ValueError("--params and --shape apply to a layer type, not to a model")
        report, notes = check_model(args.target, batch=args.batch, input_size=args.input_size,
                                    samples=args.samples, phase=args.phase, seed=args.seed,
                                    keep_init=args.keep_init, **tolerances)
    if args.json:
        print(json.dumps(report_dict(args.target, report, notes), indent=2))
    else:
        print(f"{args.target}: " + "; ".join(notes))
        print(report)
        print("(an element passes when |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|))")
        failed = [r.name for r in report.results if not r.passed]
        if failed:
            print(f"FAIL: {len(failed)} of {len(report.results)} arrays: {', '.join(failed)}")
        else:
            print(f"PASS: all {len(report.results)} arrays within tolerance")
        sys.stdout.flush()
    return 0 if report.passed else 1
