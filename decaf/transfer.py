"""Transfer learning on frozen features: the DeCAF protocol and the Oquab et al. adaptation layers.

The protocol (``evaluate``), as in DeCAF's Caltech-101 experiments:

1. draw ``per_class`` training images of every class at random; the rest are the test set;
2. choose the regularisation C of the classifier by cross-validation on the training
   images only: stratified k-fold with k = min(per_class, 3), scored by mean per-class
   accuracy, over ``C_GRID``. With one image per class there is nothing to validate
   on, so C is fixed to 1;
3. train on all training images with that C, report the mean per-class accuracy on
   the test set; repeat for ``splits`` random draws and give mean and standard deviation.

Features are scaled by one number per split so that the training rows have a mean L2 norm
of sqrt(D) (a feature's RMS is then about 1), so one C grid suits features of any scale
and size; nothing else is done to them (no centring, so a zero stays a zero for dropout). Classifiers (scikit-learn):
``logreg`` = multinomial LogisticRegression (newton-cg), ``svm`` = LinearSVC (one-vs-rest hinge).

Dropout on features (``dropout=True``): every training feature is zeroed with
probability 0.5, every test feature is multiplied by 0.5, the expectation of the mask.
Dropout in a net draws a new mask at every pass; a scikit-learn classifier sees a fixed
training set, so it gets ``copies`` (default 10) independently masked copies of it.

The adaptation layers of Oquab et al. (``AdaptationLayers``): FCa (2048) + ReLU +
dropout + FCb (classes) + softmax, trained with momentum SGD on frozen features. They
are a decaf ``Net`` (InnerProduct, ReLU, Dropout, SoftmaxWithLoss) and ten lines of SGD.
"""
import json

import numpy as np

C_GRID = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
CLASSIFIERS = ("logreg", "svm")


# ---- data ------------------------------------------------------------------------------


def load_feature_set(path, blob=None):
    """(X (N, D) float32, labels (N,) str, paths (N,) str, blob name) from an extracted ``.npz``.

    ``blob`` defaults to the file's only feature array (an error if it has several).
    """
    from .features import RESERVED_KEYS, load_features

    feats = load_features(path)
    names = [k for k in feats if k not in RESERVED_KEYS]
    if blob is None:
        if len(names) != 1:
            raise ValueError(f"{path} holds several feature arrays {names}: choose one with --blob")
        blob = names[0]
    if blob not in names:
        raise KeyError(f"{path} has no feature array {blob!r} (it has {names})")
    X = np.asarray(feats[blob], np.float32).reshape(len(feats[blob]), -1)
    if "labels" not in feats:
        raise ValueError(f"{path} has no labels")
    return X, np.asarray(feats["labels"]).astype(str), np.asarray(feats.get("paths", [])).astype(str), blob


def mean_per_class_accuracy(y_true, y_pred):
    """The accuracy of each class present in ``y_true``, averaged over the classes."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def per_class_split(y, per_class, rng):
    """(train, test) index arrays: ``per_class`` random images of each class for training, the rest for testing."""
    y = np.asarray(y)
    train = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) <= per_class:
            raise ValueError(f"class {str(c)!r} has {len(members)} images: {per_class} for training leaves "
                             "none to test on")
        train.append(rng.choice(members, per_class, replace=False))
    train = np.sort(np.concatenate(train))
    test = np.setdiff1d(np.arange(len(y)), train)
    return train, test


# ---- dropout on features -------------------------------------------------------------


def dropout_train(X, rng, ratio=0.5, copies=1):
    """``copies`` stacked copies of X, each feature zeroed with probability ``ratio``."""
    X = np.asarray(X)
    return np.concatenate([X * (rng.random(X.shape) >= ratio) for _ in range(copies)]).astype(X.dtype)


def dropout_test(X, ratio=0.5):
    """X scaled by the keep probability: the expected value of a dropped-out feature."""
    return np.asarray(X) * (1.0 - ratio)


# ---- classifiers -----------------------------------------------------------------------


def make_classifier(name, C, seed=0):
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression
        return LogisticRegression(C=C, solver="newton-cg", max_iter=500)   # lbfgs: 10x slower here
    if name == "svm":
        from sklearn.svm import LinearSVC
        return LinearSVC(C=C, max_iter=20000, random_state=seed)
    raise ValueError(f"unknown classifier {name!r}; choose from {CLASSIFIERS}")


def _fit_predict(classifier, C, Xtr, ytr, Xte, dropout, copies, rng, seed):
    if dropout:
        Xtr, ytr = dropout_train(Xtr, rng, copies=copies), np.tile(ytr, copies)
        Xte = dropout_test(Xte)
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = make_classifier(classifier, C, seed).fit(Xtr, ytr)
    return model.predict(Xte)


def choose_C(X, y, classifier="logreg", grid=C_GRID, dropout=False, copies=10, seed=0):
    """The C of ``grid`` with the best cross-validated mean per-class accuracy; (C, {C: score})."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.unique(y, return_counts=True)[1]
    folds = int(min(counts.min(), 3))
    if folds < 2:
        return 1.0, {}
    rng = np.random.default_rng(seed)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = {}
    for C in grid:
        acc = [mean_per_class_accuracy(y[va], _fit_predict(classifier, C, X[tr], y[tr], X[va], dropout, copies,
                                                           rng, seed))
               for tr, va in splitter.split(X, y)]
        scores[C] = float(np.mean(acc))
    best = max(grid, key=lambda c: (scores[c], -abs(np.log10(c))))   # ties: the C nearest to 1
    return best, scores


def evaluate(X, y, classifier="logreg", per_class=30, splits=5, dropout=False, copies=10, seed=0, grid=C_GRID):
    """The protocol above for one setting: {"mean", "std", "accuracies", "C"} (accuracies in 0..1)."""
    X = np.asarray(X, np.float32)
    y = np.asarray(y).astype(str)
    accuracies, chosen = [], []
    for s in range(splits):
        rng = np.random.default_rng([seed, per_class, s])
        train, test = per_class_split(y, per_class, rng)
        scale = np.sqrt(X.shape[1]) / (np.mean(np.linalg.norm(X[train], axis=1)) or 1.0)
        Xtr, Xte = X[train] * scale, X[test] * scale
        C, _ = choose_C(Xtr, y[train], classifier, grid, dropout, copies, seed=seed * 1000 + s)
        pred = _fit_predict(classifier, C, Xtr, y[train], Xte, dropout, copies, rng, s)
        accuracies.append(mean_per_class_accuracy(y[test], pred))
        chosen.append(C)
    return {"mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)),
            "accuracies": [float(a) for a in accuracies], "C": chosen}


def run_protocol(feature_sets, classifiers=("logreg",), per_class=(30,), splits=5, dropout=(False,), copies=10,
                 seed=0, on_result=None):
    """Every (feature set, classifier, dropout, per_class) combination; a list of result dicts.

    ``feature_sets``: a list of (name, X, y).
    """
    results = []
    for name, X, y in feature_sets:
        for classifier in classifiers:
            for drop in dropout:
                for n in per_class:
                    r = evaluate(X, y, classifier, n, splits, drop, copies, seed)
                    r.update({"features": name, "dim": int(X.shape[1]), "classifier": classifier,
                              "dropout": bool(drop), "dropout_copies": int(copies) if drop else 0,
                              "per_class": int(n), "splits": int(splits),
                              "classes": int(len(np.unique(y))), "images": int(len(y))})
                    results.append(r)
                    if on_result:
                        on_result(r)
    return results


def format_table(results):
    """A Markdown table: one row per (features, classifier, dropout), one column per training size."""
    sizes = sorted({r["per_class"] for r in results})
    rows = {}
    for r in results:
        key = (r["features"], r["classifier"] + (" + dropout" if r["dropout"] else ""))
        rows.setdefault(key, {})[r["per_class"]] = r
    head = "| features | classifier | " + " | ".join(f"{n} per class" for n in sizes) + " |"
    lines = [head, "|" + "---|" * (len(sizes) + 2)]
    for (features, clf), cells in rows.items():
        text = [f"{100 * cells[n]['mean']:.1f} ± {100 * cells[n]['std']:.1f}" if n in cells else ""
                for n in sizes]
        lines.append(f"| {features} | {clf} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def results_json(results, **protocol):
    return json.dumps({"protocol": dict(protocol, C_grid=list(C_GRID), metric="mean per-class accuracy"),
                       "results": results}, indent=1)


# ---- Oquab et al.: adaptation layers on frozen features -----------------------------------


class AdaptationLayers:
    """FCa (``hidden``) + ReLU + Dropout + FCb (classes) + softmax, trained by momentum SGD.

    ``fit(X, y)`` takes frozen features (N, D) and integer labels 0..classes-1;
    ``predict_proba(X)`` gives (N, classes) softmax outputs.
    """

    def __init__(self, num_classes, hidden=2048, dropout=0.5, lr=0.01, momentum=0.9, weight_decay=5e-4,
                 epochs=30, batch_size=64, seed=0):
        self.num_classes, self.hidden, self.dropout = num_classes, hidden, dropout
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.epochs, self.batch_size, self.seed = epochs, batch_size, seed
        self.net = None
        self.losses = []

    def spec(self, dim):
        layers = [{"name": "fca", "type": "InnerProduct", "bottom": "data", "top": "fca", "num_output": self.hidden,
                   "weight_filler": {"type": "gaussian", "std": 0.01}},
                  {"name": "relu_a", "type": "ReLU", "bottom": "fca", "top": "fca"}]
        if self.dropout:
            layers.append({"name": "drop_a", "type": "Dropout", "bottom": "fca", "top": "fca",
                           "dropout_ratio": self.dropout})
        layers += [{"name": "fcb", "type": "InnerProduct", "bottom": "fca", "top": "fcb",
                    "num_output": self.num_classes, "weight_filler": {"type": "gaussian", "std": 0.01}},
                   {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["fcb", "label"], "top": "loss"}]
        return {"name": "adaptation", "inputs": {"data": [dim], "label": []}, "layers": layers}

    def fit(self, X, y):
        from .net import Net

        X = np.ascontiguousarray(X, np.float32)
        y = np.asarray(y, np.int64)
        self.net = Net(self.spec(X.shape[1]), phase="train", seed=self.seed)
        rng = np.random.default_rng(self.seed)
        velocity = {name: np.zeros_like(p.data) for name, p in self.net.params.items()}
        self.losses = []
        for _ in range(self.epochs):
            order = rng.permutation(len(X))
            total = 0.0
            for start in range(0, len(X), self.batch_size):
                idx = order[start:start + self.batch_size]
                self.net.forward({"data": X[idx], "label": y[idx].astype(np.float32)}, outputs=["loss"])
                self.net.backward()
                total += self.net.loss() * len(idx)
                for name, p in self.net.params.items():     # momentum SGD with weight decay
                    grad = p.diff + self.weight_decay * p.decay_mult * p.data
                    velocity[name] = self.momentum * velocity[name] - self.lr * p.lr_mult * grad
                    p.data += velocity[name]
            self.losses.append(total / len(X))
        self.net.set_phase("test")
        return self

    def predict_proba(self, X, batch_size=512):
        if self.net is None:
            raise RuntimeError("AdaptationLayers: call fit() first")
        X = np.ascontiguousarray(X, np.float32)
        out = []
        for start in range(0, len(X), batch_size):
            scores = self.net.forward({"data": X[start:start + batch_size]}, outputs=["fcb"])["fcb"]
            scores = scores - scores.max(axis=1, keepdims=True)
            e = np.exp(scores)
            out.append(e / e.sum(axis=1, keepdims=True))
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)
