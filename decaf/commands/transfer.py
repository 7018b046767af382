"""decaf transfer SOURCE... : linear classifiers on frozen features, DeCAF's protocols."""
import sys

EXAMPLE = """examples:
  decaf transfer feats.npz                                   # logreg, 30 per class, 5 splits
  decaf transfer feats.npz pixels.npz --classifier logreg --classifier svm \\
      --per-class 1 5 10 30 --splits 5 --dropout both --json results.json --plot curve.png
  decaf transfer photos/ --model efficientnet_lite0 --model efficientnet_lite2 --per-class 5 10
  decaf transfer sun397.npz --per-class 50 --test-per-class 50        # SUN-397's 50/50 split
  decaf transfer --train-on amazon.npz --test-on webcam.npz --per-class 20 --setting S T ST
  decaf transfer voc.npz --metric voc11 --per-class 10               # multi-label (labels 'a,b')
  decaf transfer cub_boxes.txt --box-scale 1.5 --resize warp         # lines 'PATH LABEL X Y W H'

SOURCE: a FEATURES.npz from 'decaf extract', or a folder / list file of images whose features
are extracted here with each --model and cached (DECAF_CACHE/transfer/). Protocol: N training
images per class drawn at random, the rest (or --test-per-class M of each class) for testing;
C chosen by cross-validation on the training images only; mean ± standard deviation over K
random splits. --train-on/--test-on: a domain shift (Office), S = source only, T = the
--target-per-class labelled target images only, ST = both; tested on the other target images.
--json is written after every finished cell; --resume skips the cells it already holds.
The protocol in full: docs/transfer.md."""


def per_class_value(text):
    import argparse
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"give a whole number of at least 1, or 'all'; got {text!r}")
    return value


def add_parser(sub):
    import argparse
    p = sub.add_parser("transfer", help="linear classifiers on frozen features (DeCAF's protocols)",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("features", nargs="*", metavar="SOURCE",
                   help="FEATURES.npz files from 'decaf extract', image folders or list files")
    p.add_argument("--blob", action="append", metavar="NAME",
                   help="feature array(s) of the .npz files, or blobs to extract from images "
                        "(default: every array / the net's feature blob)")
    p.add_argument("--model", action="append", metavar="MODEL",
                   help="for image sources: a pretrained name or .decaf file; repeat for several "
                        "(default efficientnet_lite0)")
    p.add_argument("--resize", choices=["warp", "shorter"],
                   help="for image sources: warp (aspect not kept, the paper's 256x256) or shorter side "
                        "(default: the model's recipe)")
    p.add_argument("--box-scale", type=float, default=1.5,
                   help="list files with boxes (PATH LABEL X Y W H): enlarge each box this much (default 1.5)")
    p.add_argument("--batch", type=int, default=32, help="images per forward pass when extracting (default 32)")
    p.add_argument("--train-on", metavar="SRC", help="domain shift: the source domain (.npz, folder or list)")
    p.add_argument("--test-on", metavar="TGT", help="domain shift: the target domain, tested on")
    p.add_argument("--setting", nargs="+", choices=["S", "T", "ST"], default=["S", "T", "ST"],
                   help="domain shift: train on Source, Target, or both (default: all three)")
    p.add_argument("--target-per-class", type=int, default=3, metavar="M",
                   help="domain shift: labelled target images per class for T and ST (default 3)")
    p.add_argument("--classifier", action="append", choices=["logreg", "svm"],
                   help="logreg (logistic regression) or svm (linear SVM); repeat for both (default logreg)")
    p.add_argument("--per-class", type=per_class_value, nargs="+", default=None, metavar="N",
                   help="training images per class; several values make several columns (default 30; "
                        "with --train-on: 'all' source images)")
    p.add_argument("--test-per-class", type=int, metavar="M",
                   help="test on M random images per class (the others unused) instead of all the rest")
    p.add_argument("--metric", choices=["accuracy", "map", "voc11"], default="accuracy",
                   help="accuracy: mean per-class accuracy; map: multi-label mean average precision "
                        "(scikit-learn, not interpolated); voc11: VOC 2007 11-point mAP. Multi-label "
                        "labels are comma-separated sets")
    p.add_argument("--splits", type=int, default=5, metavar="K", help="random train/test splits (default 5)")
    p.add_argument("--dropout", nargs="?", const="on", default="off", choices=["off", "on", "both"],
                   help="dropout on the features: --dropout (on), or --dropout both for rows with and without")
    p.add_argument("--dropout-copies", type=int, default=10, help="masked copies of the training set (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random splits (default 0)")
    p.add_argument("--json", metavar="OUT.json",
                   help="write every result (per split) as JSON ('-': stdout), rewritten after each cell")
    p.add_argument("--resume", action="store_true", help="keep the finished cells of --json OUT.json")
    p.add_argument("--plot", metavar="OUT.png", help="draw the score against training images per class")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out-of-core", action="store_true",
                   help="features bigger than memory (a .zarr store from 'decaf extract'): SGD by partial_fit "
                        "over the shards, C held out on a third of the training images (docs/scale.md)")
    p.add_argument("--epochs", type=int, default=5, help="--out-of-core: SGD passes over the training rows (5)")
    return p


def _label(path):
    import os
    return os.path.basename(os.path.normpath(path))


class _Loader:
    """Feature sets from the sources: .npz arrays, or images extracted with each model (loaded once)."""

    def __init__(self, args):
        self.args = args
        self.nets = {}
        self.models = args.model or [None]

    def net(self, model):
        if model not in self.nets:
            from ..io import load_model
            self.nets[model] = load_model(model)
        return self.nets[model]

    def sets(self, source):
        """[(model or None, blob, X, y)] for one source."""
        import os

        import numpy as np

        from ..features import RESERVED_KEYS, default_blob, open_features
        from ..pretrained import DEFAULT_MODEL
        from ..transfer import load_feature_set
        from ..transfer_sources import image_feature_file, is_feature_file

        from ..featstore import is_store
        if is_feature_file(source) or is_store(source):      # .npz, or a feature store (.zarr, URL)
            names = self.args.blob or [k for k in open_features(source) if k not in RESERVED_KEYS]   # lazy
            files = [(source, names, None)]
        else:
            if not os.path.exists(source):
                raise FileNotFoundError(f"{source}: no such folder, list file or .npz")
            files = []
            for model in self.models:
                net = self.net(model)
                blobs = self.args.blob or [default_blob(net)]
                path = image_feature_file(net, model or DEFAULT_MODEL, source, blobs, self.args.resize,
                                          self.args.box_scale, self.args.batch, not self.args.quiet,
                                          on_error=self._skipped)
                files.append((path, blobs, model or DEFAULT_MODEL))
        out = []
        for path, blobs, model in files:
            for blob in blobs:
                X, y, _, blob = load_feature_set(path, blob)
                out.append((model, blob, X, y))
                counts = np.unique(y, return_counts=True)
                print(f"{source}: {model + ':' if model else ''}{blob}, {X.shape[1]}-d, {len(y)} images, "
                      f"{len(counts[0])} labels ({counts[1].min()}-{counts[1].max()} images each)", file=sys.stderr)
        return out

    @staticmethod
    def _skipped(path, message):
        print(f"skipped: {path}: {message}", file=sys.stderr)


def _feature_sets(args):
    loader = _Loader(args)
    if args.train_on or args.test_on:
        if not (args.train_on and args.test_on):
            raise ValueError("a domain shift needs both --train-on SRC and --test-on TGT")
        if args.features:
            raise ValueError("give either SOURCE files or --train-on/--test-on, not both")
        source, target = loader.sets(args.train_on), loader.sets(args.test_on)
        if [s[:2] for s in source] != [t[:2] for t in target]:
            raise ValueError(f"--train-on gives the feature sets {[s[1] for s in source]} but --test-on "
                             f"{[t[1] for t in target]}: name the same with --blob")
        where = f"{_label(args.train_on)} → {_label(args.test_on)}"
        return [(_name(where, model, blob, Xs), (Xs, ys), (Xt, yt))
                for (model, blob, Xs, ys), (_, _, Xt, yt) in zip(source, target)]
    if not args.features:
        raise ValueError("give SOURCE files (.npz, folders, list files) or --train-on SRC --test-on TGT")
    return [(_name(_label(source), model, blob, X), X, y)
            for source in args.features for model, blob, X, y in loader.sets(source)]


def _name(where, model, blob, X):
    """How a feature set is named in the table: 'feats.npz:pool (1280-d)', 'photos efficientnet_lite1:pool (...)'."""
    return f"{where}{' ' + _label(model) if model else ''}:{blob} ({X.shape[1]}-d)"


def _previous(args):
    """{cell_key: result} of the --json file when resuming."""
    import json
    import os

    from ..transfer import cell_key

    if not args.resume:
        return {}
    if not args.json or args.json == "-":
        raise ValueError("--resume needs --json OUT.json (the file it resumes)")
    if not os.path.exists(args.json):
        print(f"--resume: {args.json} does not exist yet; starting from scratch", file=sys.stderr)
        return {}
    try:
        with open(args.json) as f:
            report = json.load(f)
        results = report["results"]
        return {cell_key(r): r for r in results if "mean" in r}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--resume: {args.json} is not a decaf transfer result file ({exc})") from None


def _write(path, text):
    from ..io.blobfile import _write_atomically
    _write_atomically(path, lambda stream: stream.write(text.encode() + b"\n"))


def _check_output_folders(args):
    """--json / --plot into a missing folder: said before the run, not after it (and not as a temporary name)."""
    import os
    for flag, out in (("--json", args.json), ("--plot", args.plot)):
        if out and out != "-" and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
            raise ValueError(f"{flag} {out}: the folder {os.path.dirname(os.path.abspath(out))} does not exist")


def run(args):
    _check_output_folders(args)
    if args.out_of_core:
        from ..transfer_scale import run_cli
        return run_cli(args)
    from ..transfer import METRICS, cell_key, format_table, plan_cells, plot_curves, results_json, run_cell

    if args.splits < 1 or args.dropout_copies < 1 or args.batch < 1:
        raise ValueError("--splits, --dropout-copies and --batch must be at least 1")
    if args.test_per_class is not None and args.test_per_class < 1:
        raise ValueError("--test-per-class must be at least 1")
    if args.target_per_class < 0:
        raise ValueError("--target-per-class must be 0 or more")
    if args.box_scale <= 0:
        raise ValueError("--box-scale must be positive")
    shift = bool(args.train_on or args.test_on)
    per_class = args.per_class or ([None] if shift else [30])
    if None in per_class and not shift:
        raise ValueError("--per-class all is for a domain shift (--train-on/--test-on): the rest is the test set")
    if args.plot and not args.plot.lower().endswith((".png", ".svg", ".pdf")):
        raise ValueError(f"--plot {args.plot}: give a .png, .svg or .pdf file")
    done = _previous(args)
    sets = _feature_sets(args)
    classifiers = args.classifier or ["logreg"]
    dropout = {"off": (False,), "on": (True,), "both": (False, True)}[args.dropout]
    cells = plan_cells(sets, classifiers, per_class, args.splits, dropout, args.dropout_copies, args.seed,
                       args.metric, args.test_per_class, args.setting, args.target_per_class)
    keys = [cell_key(c) for c in cells]
    finished = {k: done[k] for k in keys if k in done}
    if args.resume:
        other = len(done) - len(finished)
        print(f"--resume: {len(finished)} of {len(cells)} cells already in {args.json}"
              + (f"; {other} other cell(s) there are not part of this run and are left out" if other else ""),
              file=sys.stderr)
    protocol = dict(splits=args.splits, per_class=per_class, seed=args.seed, dropout_copies=args.dropout_copies,
                    metric=args.metric, test_per_class=args.test_per_class)
    if shift:
        protocol.update(train_on=args.train_on, test_on=args.test_on, settings=args.setting,
                        target_per_class=args.target_per_class)

    def ordered():
        return [finished[k] for k in keys if k in finished]

    from tqdm import tqdm
    todo = [c for c, k in zip(cells, keys) if k not in finished]
    bar = tqdm(total=len(todo) * args.splits, unit="split", desc="transfer", file=sys.stderr, disable=args.quiet,
               dynamic_ncols=True)
    by_name = {s[0]: s for s in sets}
    try:
        for cell in todo:
            r = run_cell(cell, by_name[cell["features"]], on_split=lambda: bar.update(1))
            finished[cell_key(cell)] = r
            bar.write(f"  {r['features']} {r['classifier']}{' + dropout' if r['dropout'] else ''}"
                      f"{' ' + r['setting'] if 'setting' in r else ''} "
                      f"N={'all' if r['per_class'] is None else r['per_class']}: "
                      f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}", file=sys.stderr)
            if args.json and args.json != "-":
                _write(args.json, results_json(ordered(), complete=len(finished) == len(cells), **protocol))
    finally:
        bar.close()
    results = ordered()
    text = results_json(results, complete=True, **protocol)
    if args.json and args.json != "-":
        _write(args.json, text)     # also when every cell was resumed
    if args.plot:
        plot_curves(results, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    if args.json == "-":
        print(text)
        return 0
    print(f"{METRICS[args.metric]} (%), mean ± std over {args.splits} splits")
    print(format_table(results))
    return 0
