"""decaf train: train a net (from scratch, fine-tuned, or resumed) on digits, arrays or an image folder.

    decaf train MODEL (--digits | --data FILE.npz | --data DIR) [options]
    decaf train --resume SNAPSHOT.decaf (--digits | --data ...) --iters N

MODEL is a zoo name (its spec gets the data's classes and input shape), a spec .json file, inline
JSON, or a .decaf file (its weights are the starting point); --pretrained takes a pretrained name.
Writes to --out: model.decaf (for inference), snapshot_iter_N.decaf (to resume), log.csv,
log.json and loss.png.
"""
import json
import os
import sys

EXAMPLE = """examples:
  decaf train lenet --digits --iters 1000 --lr 0.05
  decaf train lenet --data mnist.npz --test-data mnist_test.npz --solver adam --lr 0.001
  decaf train net.json --data photos/ --test-fraction 0.2 --mirror --lr-policy step --step 500
  decaf train efficientnet_lite0 --pretrained --data photos/ --replace-classifier fc --iters 300
  decaf train caffenet.decaf --data photos/ --adapt relu7 --hidden 2048 --lr 0.001
  decaf train --resume train_out/snapshot_iter_500.decaf --digits --iters 1000
Data: --digits is scikit-learn's 8x8 digits; an .npz holds arrays x (N, C, H, W) or (N, H, W) and y
(N labels), optionally classes; a folder holds one subfolder of images per class. Without
--test-data, a stratified --test-fraction of the data is held out for testing."""

SOLVER_LR = {"sgd": 0.01, "nesterov": 0.01, "adagrad": 0.01, "adam": 0.001}


def add_parser(sub):
    import argparse
    p = sub.add_parser("train", help="train a net with SGD/Adam/... and write snapshots, logs and a loss curve",
                       description=__doc__.split("\n\n")[0], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="zoo name, spec .json, inline JSON or .decaf file (omit with --resume)")
    g = p.add_argument_group("data")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--digits", action="store_true", help="scikit-learn's 8x8 digits (1797 images, 10 classes)")
    src.add_argument("--data", metavar="NPZ|DIR", help="an .npz with arrays x and y, or a folder of class folders")
    g.add_argument("--test-data", metavar="NPZ|DIR", help="held-out test data (default: split off --test-fraction)")
    g.add_argument("--test-fraction", type=float, default=0.25, help="share held out for testing (default 0.25)")
    g.add_argument("--batch", type=int, default=64, help="minibatch size (default 64)")
    g.add_argument("--resize", type=int, default=None,
                   help="folder images: side after resizing (default: the net's input, or its recipe's resize)")
    g.add_argument("--crop", type=int, default=None, help="random crops of this side for training "
                   "(centre crops for testing); default: the net's input side when the images are larger")
    g.add_argument("--pad", type=int, default=0, help="zero padding before cropping (default 0)")
    g.add_argument("--mirror", action="store_true", help="random left-right mirroring")
    m = p.add_argument_group("model")
    m.add_argument("--model-args", metavar="JSON", default=None,
                   help="keyword arguments of a zoo spec, e.g. '{\"channels\": [8, 16], \"hidden\": 64}'")
    m.add_argument("--pretrained", action="store_true", help="MODEL is a pretrained net name (decaf models)")
    m.add_argument("--replace-classifier", metavar="LAYER", help="fine-tune: a new LAYER for the data's classes")
    m.add_argument("--adapt", metavar="BLOB", help="fine-tune: FCa + ReLU + FCb on top of BLOB (Oquab et al.)")
    m.add_argument("--hidden", type=int, default=2048, help="FCa width for --adapt (default 2048)")
    m.add_argument("--train-all", action="store_true", help="fine-tune every layer (default: only the new ones)")
    s = p.add_argument_group("solver")
    s.add_argument("--solver", choices=["sgd", "nesterov", "adagrad", "adam", "lbfgs"], default="sgd")
    s.add_argument("--iters", type=int, default=1000, help="iterations in total (default 1000)")
    s.add_argument("--lr", type=float, default=None,
                   help="base learning rate (default 0.01; 0.001 for adam)")
    s.add_argument("--lr-policy", default="fixed",
                   choices=["fixed", "step", "multistep", "exp", "inv", "poly", "cosine"])
    s.add_argument("--gamma", type=float, default=0.1, help="step/multistep/exp/inv factor (default 0.1)")
    s.add_argument("--step", type=int, default=None, help="step: iterations per decay")
    s.add_argument("--steps", default=None, help="multistep: iterations, comma-separated")
    s.add_argument("--power", type=float, default=1.0, help="inv/poly exponent (default 1)")
    s.add_argument("--min-lr", type=float, default=0.0, help="cosine: final rate (default 0)")
    s.add_argument("--momentum", type=float, default=0.9, help="sgd/nesterov momentum (default 0.9)")
    s.add_argument("--weight-decay", type=float, default=5e-4, help="L2 weight decay (default 5e-4)")
    s.add_argument("--clip-norm", type=float, default=None, help="clip gradients to this global L2 norm")
    s.add_argument("--beta1", type=float, default=0.9, help="adam: first-moment decay (default 0.9)")
    s.add_argument("--beta2", type=float, default=0.999, help="adam: second-moment decay (default 0.999)")
    o = p.add_argument_group("run and output")
    o.add_argument("--seed", type=int, default=0, help="seeds weights, shuffling, augmentation, split (default 0)")
    o.add_argument("--test-interval", type=int, default=None, help="evaluate every N iterations (default iters/10)")
    o.add_argument("--display", type=int, default=10, help="iterations per log row (default 10)")
    o.add_argument("--snapshot-interval", type=int, default=0, help="also snapshot every N iterations")
    o.add_argument("--resume", metavar="SNAPSHOT", help="continue from a snapshot (model and solver from it)")
    o.add_argument("--out", default="train_out", help="output folder (default train_out)")
    o.add_argument("--threads", type=int, default=None,
                   help="threads for the BLAS and decaf's kernels (decaf.set_num_threads); 1 suits small nets")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    o.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


# ---- data ----------------------------------------------------------------------------------

def read_arrays(path):
    """An .npz with x and y -> ArraySource; (N, H, W) images get a channel axis."""
    import numpy as np

    from ..data import ArraySource
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read as .npz ({exc})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: needs arrays x and y, has {sorted(arrays)}")
    x = arrays["x"]
    if x.ndim == 3:
        x = x[:, None]
    classes = [str(c) for c in arrays["classes"]] if "classes" in arrays else None
    return ArraySource(x, arrays["y"], classes)


def open_sources(args):
    """(train source or folder path, test source or folder path or None, classes)."""
    from ..data import ImageFolder, digits, split
    if args.digits:
        if args.test_data:
            raise ValueError("--digits brings its own test split (--test-fraction); drop --test-data")
        train, test = digits(args.test_fraction, args.seed)
        return train, test, train.classes
    if not args.data:
        raise ValueError("no training data: give --digits or --data FILE.npz|DIR")

    def one(path):
        if os.path.isdir(path):
            return path
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file or folder")
        return read_arrays(path)
    train = one(args.data)
    test = one(args.test_data) if args.test_data else None
    if isinstance(train, str):
        classes = ImageFolder._scan(train)[0]
        if isinstance(test, str) and ImageFolder._scan(test)[0] != classes:
            raise ValueError(f"the test folder's classes differ from the training folder's ({classes})")
    else:
        if test is None:
            train, test = split(train, args.test_fraction, args.seed)
        n = int(max(train.labels.max(), test.labels.max() if test is not None and not isinstance(test, str) else 0)) + 1
        classes = train.classes or [str(i) for i in range(n)]
    return train, test, classes


def folder_sources(train, test, args, input_shape, recipe):
    """ImageFolder sources sized for the net; returns (train, test, crop, preprocess recipe)."""
    from ..data import ImageFolder, split
    c, h, w = input_shape
    if h != w:
        raise ValueError(f"image folders need a square net input, the net takes {h}x{w}")
    recipe = dict(recipe or {})
    size = args.resize or recipe.get("resize_shorter") or h
    if size < h:
        raise ValueError(f"--resize {size} is smaller than the net's input {h}")
    folder = {k: recipe[k] for k in ("channels", "scale", "mean", "std", "resample") if k in recipe}
    src = ImageFolder(train, size, c, folder)
    tst = ImageFolder(test, size, c, folder) if test else None
    if tst is None:
        src, tst = split(src, args.test_fraction, args.seed)
    crop = args.crop or (h if size > h else None)
    pre = dict(src.recipe, resize_shorter=size, crop=h) if c == 3 else None
    return src, tst, crop, pre


# ---- model ---------------------------------------------------------------------------------

def resolve_model(args, classes, shape):
    """(spec, pretrained params or None, meta) for MODEL."""
    import inspect

    from ..io.netfile import read_netfile
    from ..models import ZOO
    model = args.model
    if model is None:
        raise ValueError("give a MODEL (zoo name, spec .json or .decaf) or --resume SNAPSHOT")
    if args.pretrained:
        from ..pretrained import pretrained_path
        spec, params, meta, _ = read_netfile(pretrained_path(model))
        return spec, params, meta
    if model in ZOO:
        from ..pretrained import PRETRAINED
        if model in PRETRAINED:     # the zoo spec of a pretrained net: its fillers, not its weights
            print(f"warning: training {model} from random weights; add --pretrained to start from its "
                  f"ImageNet weights", file=sys.stderr)
        fn = ZOO[model]
        names = inspect.signature(fn).parameters
        kw = {}
        if "num_classes" in names and not (args.replace_classifier or args.adapt):
            kw["num_classes"] = len(classes)
        if "with_loss" in names:
            kw["with_loss"] = True
        if shape is not None and "input_shape" in names:
            kw["input_shape"] = tuple(shape)
        elif shape is not None and "input_size" in names and len(shape) == 3 and shape[1] == shape[2]:
            kw["input_size"] = shape[1]
        if args.model_args:
            try:
                extra = json.loads(args.model_args)
            except json.JSONDecodeError as exc:
                raise ValueError(f"--model-args is not valid JSON ({exc})") from None
            if not isinstance(extra, dict):
                raise ValueError(f"--model-args must be a JSON object of arguments, got {args.model_args!r}")
            unknown = sorted(set(extra) - set(names))
            if unknown:
                raise ValueError(f"--model-args: {model} takes no argument(s) {unknown}; it takes {sorted(names)}")
            kw.update(extra)
        return fn(**kw), None, {}
    if args.model_args:
        raise ValueError("--model-args applies to zoo models only")
    text = model.strip()
    if text.startswith("{"):
        try:
            return json.loads(text), None, {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"the inline JSON spec is not valid JSON: {exc}") from None
    if text.endswith(".decaf"):
        spec, params, meta, _ = read_netfile(text)
        return spec, params, meta
    if os.path.exists(text):
        from ..io.netfile import read_spec_json
        return read_spec_json(text), None, {}
    raise ValueError(f"{model!r} is not a zoo model ({', '.join(sorted(ZOO))}), a spec .json file, "
                     "inline JSON or a .decaf file")


def build_spec(args, spec, num_classes):
    from ..train import ADAPTATION_LAYERS, add_adaptation_layers, freeze, replace_classifier, training_spec
    if args.replace_classifier and args.adapt:
        raise ValueError("choose one of --replace-classifier and --adapt")
    new = None
    if args.replace_classifier:
        spec = replace_classifier(spec, args.replace_classifier, num_classes)
        new = [args.replace_classifier + "_new"]
    elif args.adapt:
        spec = add_adaptation_layers(spec, args.adapt, num_classes, args.hidden)
        new = list(ADAPTATION_LAYERS)
    spec = training_spec(spec)
    if new and not args.train_all:
        spec = freeze(spec, new)
    return spec


def make_solver(args, net):
    from ..solvers import Schedule, make_solver
    lr = args.lr if args.lr is not None else SOLVER_LR[args.solver]
    steps = [int(s) for s in args.steps.split(",")] if args.steps else None
    kw = {"policy": args.lr_policy, "base_lr": lr}
    if args.lr_policy in ("step", "multistep", "exp", "inv"):
        kw["gamma"] = args.gamma
    if args.lr_policy == "step":
        kw["step"] = args.step
    if args.lr_policy == "multistep":
        kw["steps"] = steps
    if args.lr_policy in ("inv", "poly"):
        kw["power"] = args.power
    if args.lr_policy in ("poly", "cosine"):
        kw["max_iter"] = args.iters
    if args.lr_policy == "cosine":
        kw["min_lr"] = args.min_lr
    extra = {}
    if args.solver in ("sgd", "nesterov"):
        extra["momentum"] = args.momentum
    if args.solver == "adam":
        extra.update(beta1=args.beta1, beta2=args.beta2)
    return make_solver(args.solver, net, lr=Schedule(**kw), weight_decay=args.weight_decay,
                       clip_norm=args.clip_norm, **extra)


# ---- run -----------------------------------------------------------------------------------

def run(args):
    import time

    import numpy as np

    from .. import train as T
    from ..data import Batches
    from ..net import Net

    if args.iters < 1:
        raise ValueError("--iters must be at least 1")
    if args.batch < 1:
        raise ValueError("--batch must be at least 1")
    progress = not args.no_progress and not args.json
    if args.threads is not None:
        from ..threads import set_num_threads
        set_num_threads(args.threads)

    def log(message):
        if args.json:
            return
        if progress:
            from tqdm import tqdm
            tqdm.write(message, file=sys.stdout)
        else:
            print(message, flush=True)

    started = time.perf_counter()
    train_src, test_src, classes = open_sources(args)
    if args.resume:
        if args.model:
            raise ValueError("--resume takes the model from the snapshot: drop MODEL")
        if args.solver == "lbfgs":
            raise ValueError("L-BFGS runs cannot be resumed")
        from ..io.netfile import read_netfile
        spec, _, meta, _ = read_netfile(args.resume)
        state = (meta.get("extra") or {}).get("train") or {}
        shape = tuple(spec["inputs"][T.roles(spec)["data"]])
        if isinstance(train_src, str):
            train_src, test_src, _, _ = folder_sources(train_src, test_src, args, shape, meta.get("preprocess"))
        crop = (state.get("data") or {}).get("crop")
        test = Batches(test_src, state.get("data", {}).get("batch_size", args.batch), shuffle=False, crop=crop)
        trainer = T.Trainer.resume(args.resume, train_src, test, progress=progress, log=log,
                                   snapshot_prefix=os.path.join(args.out, "snapshot"),
                                   **({"test_interval": args.test_interval} if args.test_interval else {}))
        name = spec.get("name", "net")
        if trainer.iter >= args.iters:
            raise ValueError(f"{args.resume} is already at iteration {trainer.iter}: --iters is the total, "
                             f"give more than {trainer.iter}")
        log(f"resumed {args.resume} at iteration {trainer.iter}")
    else:
        shape = None if isinstance(train_src, str) else train_src.shape
        if shape is not None and args.crop:
            shape = (shape[0], args.crop, args.crop)
        spec, params, meta = resolve_model(args, classes, shape)
        spec = build_spec(args, spec, len(classes))
        net = Net(spec, phase="train", seed=args.seed)
        if params is not None:
            copied = T.transfer_weights(net, params)
            log(f"copied {len(copied)} of {len(net.params)} parameter arrays from {args.model}")
        input_shape = net.input_shapes[T.roles(spec)["data"]]
        preprocess = None
        if isinstance(train_src, str):
            train_src, test_src, crop, preprocess = folder_sources(train_src, test_src, args, input_shape,
                                                                   (meta or {}).get("preprocess"))
        else:
            crop = args.crop
        data = Batches(train_src, args.batch, seed=args.seed, crop=crop, pad=args.pad, mirror=args.mirror)
        test = Batches(test_src, args.batch, shuffle=False, crop=crop)
        name = spec.get("name", "net")
        trained = [n for n, p in net.params.items() if p.learnable and p.lr_mult != 0]
        log(f"{name}: {len(train_src)} training and {len(test_src)} test examples, {len(classes)} classes, "
            f"input {'x'.join(map(str, input_shape))}; training {len(trained)} of {len(net.params)} parameter arrays")
        if args.solver == "lbfgs":
            return run_lbfgs(args, net, data, test, classes, preprocess, log, started)
        solver = make_solver(args, net)
        test_interval = args.test_interval if args.test_interval is not None else max(args.iters // 10, 1)
        trainer = T.Trainer(net, solver, data, test, test_interval=test_interval, display=args.display,
                            snapshot_interval=args.snapshot_interval,
                            snapshot_prefix=os.path.join(args.out, "snapshot"), progress=progress, log=log,
                            labels=classes, preprocess=preprocess)
        log(f"solver {solver!r}")
    os.makedirs(args.out, exist_ok=True)
    try:
        trainer.run(args.iters)
    except T.TrainingError:
        T.write_logs(trainer.history, args.out, {"error": "diverged", "iter": trainer.iter})
        raise
    seconds = time.perf_counter() - started
    final = trainer.history[-1]
    paths = {"model": trainer.save_model(os.path.join(args.out, "model.decaf")),
             "snapshot": trainer.snapshot(os.path.join(args.out, f"snapshot_iter_{trainer.iter}.decaf"))}
    correct = int(np.round(final["test_accuracy"] * len(test_src)))
    summary = {"model": name, "iters": trainer.iter, "epochs": final["epoch"], "seconds": round(seconds, 2),
               "train_seconds": round(trainer.elapsed, 2), "test_accuracy": final["test_accuracy"],
               "test_loss": final["test_loss"], "test_correct": correct, "test_examples": len(test_src),
               "solver": trainer.solver.config()}
    return finish(args, trainer.history, summary, paths, name)


def run_lbfgs(args, net, data, test, classes, preprocess, log, started):
    import time

    import numpy as np

    from .. import train as T
    test_interval = args.test_interval if args.test_interval is not None else max(args.iters // 10, 1)
    history, solver, result = T.train_lbfgs(net, data, args.iters, args.weight_decay, test, test_interval, log,
                                            batch_size=max(args.batch, 256))
    final = history[-1]
    from types import SimpleNamespace

    from ..io.netfile import save
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "model.decaf")
    save(SimpleNamespace(spec=T.deploy_spec(net.spec), params=net.params, meta={}), path, labels=classes,
         preprocess=preprocess, extra={"trained": {"iter": solver.iter, "solver": solver.config()}})
    summary = {"model": net.name, "iters": solver.iter, "epochs": solver.iter,
               "seconds": round(time.perf_counter() - started, 2), "test_accuracy": final["test_accuracy"],
               "test_loss": final["test_loss"], "test_correct": int(np.round(final["test_accuracy"] * len(test))),
               "test_examples": len(test), "solver": solver.config(), "lbfgs": str(result.message)}
    return finish(args, history, summary, {"model": path}, net.name)


def finish(args, history, summary, paths, name):
    from .. import train as T
    T.write_logs(history, args.out, summary)
    paths["log"] = os.path.join(args.out, "log.csv")
    paths["json"] = os.path.join(args.out, "log.json")
    paths["plot"] = T.plot_history(history, os.path.join(args.out, "loss.png"), f"decaf train {name}")
    summary["files"] = paths
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"trained {name} for {summary['iters']} iterations ({summary['epochs']:g} epochs) "
          f"in {summary['seconds']:.1f} s")
    print(f"test accuracy {100 * summary['test_accuracy']:.2f} % ({summary['test_correct']}/"
          f"{summary['test_examples']}), test loss {summary['test_loss']:.4f}")
    print("wrote " + ", ".join(paths.values()))
    return 0
