"""decaf transfer FEATURES.npz... : linear classifiers on extracted features, DeCAF's protocol."""
import sys

EXAMPLE = """examples:
  decaf transfer feats.npz                                   # logreg, 30 per class, 5 splits
  decaf transfer feats.npz pixels.npz --classifier logreg --classifier svm \\
      --per-class 1 5 10 30 --splits 5 --dropout both --json results.json

Protocol: N training images per class drawn at random, the rest for testing; C chosen by
stratified k-fold cross-validation (k = min(N, 3)) on the training images only; the score is
the mean per-class accuracy, mean ± standard deviation over K random splits. --dropout: train
on features zeroed with probability 0.5 (10 masked copies), test on features times 0.5.
Every feature array of each file is evaluated unless --blob picks one."""


def add_parser(sub):
    import argparse
    p = sub.add_parser("transfer", help="linear classifiers on extracted features (DeCAF's protocol)",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("features", nargs="+", metavar="FEATURES.npz", help="files written by 'decaf extract'")
    p.add_argument("--blob", action="append", metavar="NAME", help="feature array(s) to use (default: all)")
    p.add_argument("--classifier", action="append", choices=["logreg", "svm"],
                   help="logreg (logistic regression) or svm (linear SVM); repeat for both (default logreg)")
    p.add_argument("--per-class", type=int, nargs="+", default=[30], metavar="N",
                   help="training images per class; several values make several columns (default 30)")
    p.add_argument("--splits", type=int, default=5, metavar="K", help="random train/test splits (default 5)")
    p.add_argument("--dropout", nargs="?", const="on", default="off", choices=["off", "on", "both"],
                   help="dropout on the features: --dropout (on), or --dropout both for rows with and without")
    p.add_argument("--dropout-copies", type=int, default=10, help="masked copies of the training set (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random splits (default 0)")
    p.add_argument("--json", metavar="OUT.json", help="also write every result (per split) as JSON ('-': stdout)")
    return p


def run(args):
    import os

    import numpy as np

    from ..features import RESERVED_KEYS, load_features
    from ..transfer import format_table, load_feature_set, results_json, run_protocol

    if args.splits < 1 or min(args.per_class) < 1 or args.dropout_copies < 1:
        raise ValueError("--splits, --per-class and --dropout-copies must be at least 1")
    sets = []
    for path in args.features:
        names = args.blob or [k for k in load_features(path) if k not in RESERVED_KEYS]
        for blob in names:
            X, y, _, blob = load_feature_set(path, blob)
            sets.append((f"{os.path.basename(path)}:{blob} ({X.shape[1]}-d)", X, y))
            counts = np.unique(y, return_counts=True)
            print(f"{path}: {blob}, {len(y)} images, {len(counts[0])} classes "
                  f"({counts[1].min()}-{counts[1].max()} images per class)", file=sys.stderr)
    classifiers = args.classifier or ["logreg"]
    dropout = {"off": (False,), "on": (True,), "both": (False, True)}[args.dropout]

    def progress(r):
        print(f"  {r['features']} {r['classifier']}{' + dropout' if r['dropout'] else ''} "
              f"N={r['per_class']}: {100 * r['mean']:.1f} ± {100 * r['std']:.1f}", file=sys.stderr, flush=True)

    results = run_protocol(sets, classifiers, args.per_class, args.splits, dropout, args.dropout_copies,
                           args.seed, on_result=progress)
    text = results_json(results, splits=args.splits, per_class=args.per_class, seed=args.seed,
                        dropout_copies=args.dropout_copies)
    if args.json == "-":
        print(text)
        return 0
    print(f"mean per-class accuracy (%), mean ± std over {args.splits} splits")
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0
