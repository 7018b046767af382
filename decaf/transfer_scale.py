"""DeCAF's transfer protocol out of core: features that do not fit in memory, read one shard at a time.

    results = evaluate_out_of_core("imagenet.zarr", "relu7", per_class=[30, 100], splits=3)
    decaf transfer imagenet.zarr --out-of-core --per-class 30 100 --splits 3

The protocol of ``decaf.transfer`` (random ``per_class`` training images of each class, the rest or
``test_per_class`` of each class for testing, mean per-class accuracy, mean and standard deviation over
``splits`` draws, the same draws as ``decaf.transfer.evaluate``; features scaled so that the training
rows have a mean L2 norm of sqrt(D)) with scikit-learn's ``SGDClassifier`` trained by ``partial_fit``
over the shards of a feature store: ``logreg`` is the log loss, ``svm`` the hinge, the penalty ``alpha =
1 / (C n_train)`` as C is LogisticRegression's. What differs from the in-memory protocol, because every
fit is passes over the store: C is chosen on one stratified third of the training images held out (not
k-fold), every C of the grid is trained in the same passes (each shard is read once per epoch for all of
them), and training is ``epochs`` passes of SGD (shards in a new random order, rows shuffled within
each). Memory: one shard of features plus the labels and the per-class counts (a set smaller than
``cache_bytes``, 1 GiB, is kept in memory after the first pass instead of read again).
"""
import numpy as np

from .transfer import C_GRID, choose_blob, per_class_split

LOSSES = {"logreg": "log_loss", "svm": "hinge"}


class ChunkedFeatures:
    """One feature array of an output as (first row, rows) chunks: a store shard by shard, an .npz sliced."""

    def __init__(self, path, blob=None, rows_per_chunk=4096, cache_bytes=1 << 30):
        from .features import open_features
        from .featstore import StoreShards, is_store
        feats = open_features(path)        # a store: lazy, only its names, labels and paths are read
        blob = choose_blob(path, feats, blob)
        self.blob, self.labels = blob, np.asarray(feats["labels"]).astype(str)
        self.n, self.dim = len(self.labels), int(np.prod(feats[blob].shape[1:]))
        if is_store(path):
            self._store, self._array = StoreShards(path, blob), None
        else:
            self._store, self._array = None, np.asarray(feats[blob]).reshape(self.n, -1)
        self.rows_per_chunk = rows_per_chunk
        # a set that fits in cache_bytes is read once and kept; a bigger one is read again at every pass
        self._cache = {} if self._store and self.n * self.dim * 4 <= cache_bytes else None

    def n_chunks(self):
        return self._store.n_shards if self._store else -(-self.n // self.rows_per_chunk)

    def chunks(self, order=None):
        """(first, X float32 (rows, D)) in row order, or in the order of chunk numbers ``order``."""
        for k in (range(self.n_chunks()) if order is None else order):
            if self._store:
                if self._cache is not None and int(k) in self._cache:
                    first, X = self._cache[int(k)]
                else:
                    first, X = self._store.shard(int(k))
                    if self._cache is not None:
                        self._cache[int(k)] = first, X
            else:
                first = int(k) * self.rows_per_chunk
                X = self._array[first:first + self.rows_per_chunk]
            if len(X):
                yield first, np.asarray(X, dtype=np.float32)


def _mean_norm(data, rows):
    """The mean L2 norm of the rows ``rows`` (sorted indices), one pass."""
    total, mask = 0.0, np.zeros(data.n, bool)
    mask[rows] = True
    for first, X in data.chunks():
        pick = mask[first:first + len(X)]
        total += float(np.linalg.norm(X[pick].astype(np.float64), axis=1).sum())
    return total / max(len(rows), 1)


def _fit(data, rows, y, classes, Cs, loss, scale, epochs, rng):
    """SGDClassifiers (one per C) trained together by partial_fit on rows ``rows``: ``epochs`` passes."""
    from sklearn.linear_model import SGDClassifier
    models = [SGDClassifier(loss=loss, alpha=1.0 / (C * len(rows)), learning_rate="optimal", tol=None,
                            random_state=int(rng.integers(2**31))) for C in Cs]
    where = np.full(data.n, -1)
    where[rows] = np.arange(len(rows))
    for _ in range(epochs):
        for first, X in data.chunks(order=rng.permutation(data.n_chunks())):
            pos = where[first:first + len(X)]
            keep = np.flatnonzero(pos >= 0)
            if not len(keep):
                continue
            keep = rng.permutation(keep)
            Xs, ys = X[keep] * scale, y[first + keep]
            for m in models:
                m.partial_fit(Xs, ys, classes=classes)
    return models


def _accuracy(data, rows, y, classes, models, scale):
    """Mean per-class accuracy of each model on rows ``rows``, counted chunk by chunk."""
    index = {c: i for i, c in enumerate(classes)}
    where = np.full(data.n, -1)
    where[rows] = np.arange(len(rows))
    truth = np.asarray([index[c] for c in y[rows]])
    correct = np.zeros((len(models), len(classes)))
    for first, X in data.chunks():
        pos = where[first:first + len(X)]
        keep = np.flatnonzero(pos >= 0)
        if not len(keep):
            continue
        t = truth[pos[keep]]
        for i, m in enumerate(models):
            hit = np.asarray([index[c] for c in m.predict(X[keep] * scale)]) == t
            np.add.at(correct[i], t, hit)
    present = np.bincount(truth, minlength=len(classes))
    seen = present > 0
    return (correct[:, seen] / present[seen]).mean(axis=1)


def _holdout(y, train, rng):
    """(fit, check) subsets of ``train``: a stratified third of each class held out (at least one kept)."""
    fit, check = [], []
    for c in np.unique(y[train]):
        members = rng.permutation(train[y[train] == c])
        k = len(members) // 3
        check.append(members[:k])
        fit.append(members[k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(check))


def evaluate_split(data, per_class, rng, classifier="logreg", epochs=5, Cs=C_GRID, test_per_class=None):
    """One random split: {"accuracy", "C", "train", "test"} for a ChunkedFeatures."""
    if classifier not in LOSSES:
        raise ValueError(f"unknown classifier {classifier!r}; choose from {sorted(LOSSES)}")
    y = data.labels
    classes = np.unique(y)
    train, test = per_class_split(y, per_class, rng, test_per_class)
    scale = np.sqrt(data.dim) / max(_mean_norm(data, train), 1e-12)
    Cs = list(Cs)
    if len(Cs) > 1 and per_class >= 3:
        fit, check = _holdout(y, train, rng)
        models = _fit(data, fit, y, classes, Cs, LOSSES[classifier], scale, epochs, rng)
        C = Cs[int(np.argmax(_accuracy(data, check, y, classes, models, scale)))]
    else:
        C = 1.0 if len(Cs) > 1 else Cs[0]      # too few images to hold any out: the in-memory protocol's C
    model = _fit(data, train, y, classes, [C], LOSSES[classifier], scale, epochs, rng)
    accuracy = float(_accuracy(data, test, y, classes, model, scale)[0])
    return {"accuracy": accuracy, "C": C, "train": int(len(train)), "test": int(len(test))}


def evaluate_out_of_core(path, blob=None, per_class=(30,), splits=5, seed=0, classifiers=("logreg",), epochs=5,
                         Cs=C_GRID, test_per_class=None, on_result=None):
    """The protocol over a store (or .npz): a list of {"features", "classifier", "per_class", "mean",
    "std", "scores", "C"} results, one per (classifier, per_class)."""
    import os
    data = ChunkedFeatures(path, blob)
    results = []
    for classifier in classifiers:
        for n in per_class:
            # split s draws its training images as decaf.transfer.evaluate does: the same splits in memory
            runs = [evaluate_split(data, n, np.random.default_rng([seed, n, s]), classifier, epochs, Cs,
                                   test_per_class) for s in range(splits)]
            scores = [r["accuracy"] for r in runs]
            result = {"features": f"{os.path.basename(os.fspath(path).rstrip('/'))}:{data.blob} ({data.dim}-d)",
                      "classifier": classifier, "per_class": n, "out_of_core": True, "epochs": epochs,
                      "mean": float(np.mean(scores)), "std": float(np.std(scores)), "scores": scores,
                      "C": [r["C"] for r in runs], "test_images": [r["test"] for r in runs]}
            results.append(result)
            if on_result:
                on_result(result)
    return results


def run_cli(args):
    """``decaf transfer SOURCE... --out-of-core``: the supported part of the protocol's flags."""
    import json
    import sys
    unsupported = [flag for flag, on in [("--train-on/--test-on", args.train_on or args.test_on),
                                         ("--dropout", args.dropout != "off"), ("--metric", args.metric != "accuracy"),
                                         ("--resume", args.resume), ("--plot", args.plot)] if on]
    if unsupported:
        raise ValueError(f"--out-of-core does not do {', '.join(unsupported)} (docs/scale.md)")
    if args.epochs < 1 or args.splits < 1:
        raise ValueError("--epochs and --splits must be at least 1")
    per_class = args.per_class or [30]
    if None in per_class:
        raise ValueError("--per-class all is for a domain shift, which --out-of-core does not do")
    results = []
    for source in args.features:
        for blob in (args.blob or [None]):
            results += evaluate_out_of_core(
                source, blob, per_class, args.splits, args.seed, args.classifier or ["logreg"], args.epochs,
                test_per_class=args.test_per_class,
                on_result=lambda r: print(f"  {r['features']} {r['classifier']} N={r['per_class']}: "
                                          f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}", file=sys.stderr))
    text = json.dumps({"results": results, "splits": args.splits, "seed": args.seed, "metric": "accuracy",
                       "out_of_core": True, "epochs": args.epochs}, indent=1)
    if args.json == "-":
        print(text)
        return 0
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(f"mean per-class accuracy (%), mean ± std over {args.splits} splits, SGD out of core ({args.epochs} epochs)")
    for r in results:
        print(f"{r['features']:40s} {r['classifier']:7s} N={r['per_class']:<5d} {100 * r['mean']:5.1f} ± "
              f"{100 * r['std']:.1f}")
    return 0
