"""Transfer learning on frozen features: the DeCAF protocols and the Oquab et al. adaptation layers.

The protocol (``evaluate``), as in DeCAF's Caltech-101 experiments:

1. draw ``per_class`` training images of every class at random; the rest are the test set
   (with ``test_per_class`` M: M random images of each class among the rest, the rest unused:
   SUN-397's fixed 50 training / 50 test images per class);
2. choose the regularisation C of the classifier by cross-validation on the training
   images only: stratified k-fold with k = min(per_class, 3), scored by the metric,
   over ``C_GRID``. With one image per class there is nothing to validate on, so C is
   fixed to 1;
3. train on all training images with that C, report the metric on the test set; repeat
   for ``splits`` random draws and give mean and standard deviation.

Domain shift (``evaluate_shift``), DeCAF's Office experiments (Table 2, after Saenko et al.):
a source and a target domain with the same classes. Every split draws ``per_class`` source
images per class (None: all of them) and ``target_per_class`` (3) labelled target images per
class; the test set is the rest of the target domain, the same for the three settings of a
split and for every N (the target draw has its own seed). **S** trains on the source images
only, **T** on the labelled target images only, **ST** on both.

Metrics: ``accuracy`` is the mean per-class accuracy (the paper's Caltech-101 and Office
numbers). For multi-label data an image's label is a comma-separated set of classes
(``person,dog``); one binary classifier per class (one-vs-rest) scores every test image, each
class's average precision is computed over the test images, and the mean over the classes with
a positive test image is the score. ``map`` uses scikit-learn's ``average_precision_score``
(precision averaged at each positive, no interpolation); ``voc11`` is PASCAL VOC 2007's
11-point interpolated AP (the mean over recall levels 0, 0.1, ..., 1 of the best precision at
that recall or more), the number VOC 2007 papers such as Oquab et al. report. Training draws
for multi-label data are greedy: classes in random order, each topped up to ``per_class``
positives among the images not drawn yet. Cross-validation for them is plain 3-fold.

Features are scaled by one number per split so that the training rows have a mean L2 norm
of sqrt(D) (a feature's RMS is then about 1), so one C grid suits features of any scale
and size; nothing else is done to them (no centring, so a zero stays a zero for dropout). Classifiers (scikit-learn):
``logreg`` = multinomial LogisticRegression (newton-cg), ``svm`` = LinearSVC (one-vs-rest hinge).

Dropout on features (``dropout=True``): every training feature is zeroed with
probability 0.5, every test feature is multiplied by 0.5, the expectation of the mask.
Dropout in a net draws a new mask at every pass; a scikit-learn classifier sees a fixed
training set, so it gets ``copies`` (default 10) independently masked copies of it.

``run_protocol`` runs every combination (a *cell*: features, classifier, dropout, N, setting);
``plan_cells`` lists them and ``cell_key`` names one, so a caller can skip cells it already has.

The adaptation layers of Oquab et al. (``AdaptationLayers``): FCa (2048) + ReLU +
dropout + FCb (classes) + softmax, trained with momentum SGD on frozen features. They
are a decaf ``Net`` (InnerProduct, ReLU, Dropout, SoftmaxWithLoss) and ten lines of SGD.
"""
import hashlib
import json

import numpy as np

C_GRID = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
CLASSIFIERS = ("logreg", "svm")
METRICS = {"accuracy": "mean per-class accuracy",
           "map": "mean average precision (scikit-learn average_precision_score, not interpolated)",
           "voc11": "mean average precision (PASCAL VOC 2007 11-point interpolated)"}
MULTILABEL_METRICS = ("map", "voc11")
SETTINGS = ("S", "T", "ST")


# ---- data ------------------------------------------------------------------------------


def load_feature_set(path, blob=None):
    """(X (N, D) float32, labels (N,) str, paths (N,) str, blob name) from an extracted ``.npz``.

    ``blob`` defaults to the file's only feature array (an error if it has several).
    """
    from .features import load_features

    feats = load_features(path)
    blob = choose_blob(path, feats, blob)
    X = np.asarray(feats[blob], np.float32).reshape(len(feats[blob]), -1)
    if "labels" not in feats:
        raise ValueError(f"{path} has no labels")
    return X, np.asarray(feats["labels"]).astype(str), np.asarray(feats.get("paths", [])).astype(str), blob


def choose_blob(path, feats, blob=None):
    """The feature array of ``feats`` (a loaded or opened feature file at ``path``) to use: ``blob``,
    or the only one there is; an error naming the file and its arrays otherwise."""
    from .features import RESERVED_KEYS

    names = [k for k in feats if k not in RESERVED_KEYS]
    if blob is None:
        if len(names) != 1:
            raise ValueError(f"{path} holds several feature arrays {names}: choose one with --blob")
        blob = names[0]
    if blob not in names:
        raise KeyError(f"{path} has no feature array {blob!r} (it has {names})")
    return blob


def fingerprint(X, y):
    """A short sha256 of a feature set (values and labels): a resumed run must see the same data."""
    h = hashlib.sha256(np.ascontiguousarray(X, np.float32).tobytes())
    h.update("\0".join(map(str, y)).encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def label_matrix(labels, classes=None):
    """Comma-separated label sets -> (Y bool (N, K), classes); ``classes`` default: every class seen, sorted."""
    sets = [{c.strip() for c in str(label).split(",") if c.strip()} for label in labels]
    if classes is None:
        classes = sorted(set().union(*sets)) if sets else []
    index = {c: k for k, c in enumerate(classes)}
    Y = np.zeros((len(sets), len(classes)), bool)
    for i, s in enumerate(sets):
        for c in s:
            if c not in index:
                raise ValueError(f"label {c!r} is not one of the training classes")
            Y[i, index[c]] = True
    return Y, list(classes)


# ---- metrics ---------------------------------------------------------------------------


def mean_per_class_accuracy(y_true, y_pred):
    """The accuracy of each class present in ``y_true``, averaged over the classes."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def voc11_average_precision(y_true, scores):
    """PASCAL VOC 2007 AP: the mean over recall r in {0, 0.1, ..., 1} of the best precision at recall >= r."""
    y_true = np.asarray(y_true, bool)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    hits = np.cumsum(y_true[order])
    precision = hits / np.arange(1, len(hits) + 1)
    recall = hits / max(int(y_true.sum()), 1)
    return float(np.mean([precision[recall >= t].max() if np.any(recall >= t) else 0.0
                          for t in np.linspace(0, 1, 11)]))


def mean_average_precision(Y, scores, eleven_point=False):
    """The mean over the classes (columns) with at least one positive in ``Y`` of their average precision."""
    from sklearn.metrics import average_precision_score

    Y, scores = np.asarray(Y, bool), np.asarray(scores, np.float64)
    present = [k for k in range(Y.shape[1]) if Y[:, k].any()]
    if not present:
        raise ValueError("mean average precision: no class has a positive test image")
    ap = voc11_average_precision if eleven_point else average_precision_score
    return float(np.mean([ap(Y[:, k], scores[:, k]) for k in present]))


def score(metric, truth, output):
    """The metric of one test set: predictions (accuracy) or per-class scores (the mAPs)."""
    if metric == "accuracy":
        return mean_per_class_accuracy(truth, output)
    if metric in MULTILABEL_METRICS:
        return mean_average_precision(truth, output, eleven_point=metric == "voc11")
    raise ValueError(f"unknown metric {metric!r}; choose from {sorted(METRICS)}")


# ---- splits ----------------------------------------------------------------------------


def per_class_split(y, per_class, rng, test_per_class=None):
    """(train, test) index arrays: ``per_class`` random images of each class for training, the rest for
    testing (or ``test_per_class`` random images of each class among the rest)."""
    y = np.asarray(y)
    need = per_class + (test_per_class or 1)
    train, members_of = [], {}
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) < need:
            what = (f"{per_class} for training and {test_per_class} for testing need {need}" if test_per_class
                    else f"{per_class} for training leaves none to test on")
            raise ValueError(f"class {str(c)!r} has {len(members)} images: {what}")
        train.append(rng.choice(members, per_class, replace=False))
        members_of[c] = members
    train = np.sort(np.concatenate(train))
    if not test_per_class:
        return train, np.setdiff1d(np.arange(len(y)), train)
    test = [rng.choice(np.setdiff1d(members_of[c], train), test_per_class, replace=False) for c in members_of]
    return train, np.sort(np.concatenate(test))


def multilabel_train(Y, per_class, rng, classes, leave_for_test=True):
    """Training rows with at least ``per_class`` positives of every class (greedy, classes in random order);
    with ``leave_for_test`` every class keeps a positive outside them."""
    Y = np.asarray(Y, bool)
    chosen = np.zeros(len(Y), bool)
    for k in rng.permutation(Y.shape[1]):
        positives = np.flatnonzero(Y[:, k])
        need = per_class - int(chosen[positives].sum())
        if need <= 0:
            continue
        free = positives[~chosen[positives]]
        if len(free) < need + (1 if leave_for_test else 0):
            raise ValueError(f"class {classes[k]!r} has {len(positives)} images: {per_class} for training "
                             + ("leaves none to test on" if leave_for_test else "are too many"))
        chosen[rng.choice(free, need, replace=False)] = True
    return np.flatnonzero(chosen)


def _draw(labels, n, rng, classes, multilabel, leave_for_test):
    """Training indices: ``n`` per class (None: every image)."""
    if n is None:
        return np.arange(len(labels))
    if multilabel:
        return multilabel_train(labels, n, rng, classes, leave_for_test)
    if leave_for_test:
        return per_class_split(labels, n, rng)[0]
    picks = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < n:
            raise ValueError(f"class {str(c)!r} has {len(members)} images: fewer than {n} to train on")
        picks.append(rng.choice(members, n, replace=False))
    return np.sort(np.concatenate(picks))


# ---- dropout on features -------------------------------------------------------------


def dropout_train(X, rng, ratio=0.5, copies=1):
    """``copies`` stacked copies of X, each feature zeroed with probability ``ratio``."""
    X = np.asarray(X)
    return np.concatenate([X * (rng.random(X.shape) >= ratio) for _ in range(copies)]).astype(X.dtype)


def dropout_test(X, ratio=0.5):
    """X scaled by the keep probability: the expected value of a dropped-out feature."""
    return np.asarray(X) * (1.0 - ratio)


# ---- classifiers -----------------------------------------------------------------------


def make_classifier(name, C, seed=0, multilabel=False):
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression
        model = LogisticRegression(C=C, solver="newton-cg", max_iter=500)   # lbfgs: 10x slower here
    elif name == "svm":
        from sklearn.svm import LinearSVC
        model = LinearSVC(C=C, max_iter=20000, random_state=seed)
    else:
        raise ValueError(f"unknown classifier {name!r}; choose from {CLASSIFIERS}")
    if multilabel:
        from sklearn.multiclass import OneVsRestClassifier
        model = OneVsRestClassifier(model)
    return model


def _fit_predict(classifier, C, Xtr, ytr, Xte, dropout, copies, rng, seed, multilabel=False):
    """Predicted labels, or (multi-label) one score column per class."""
    if dropout:
        Xtr, ytr = dropout_train(Xtr, rng, copies=copies), np.concatenate([ytr] * copies)
        Xte = dropout_test(Xte)
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
        warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
        model = make_classifier(classifier, C, seed, multilabel).fit(Xtr, ytr)
        return model.decision_function(Xte) if multilabel else model.predict(Xte)


def choose_C(X, y, classifier="logreg", grid=C_GRID, dropout=False, copies=10, seed=0, metric="accuracy"):
    """The C of ``grid`` with the best cross-validated score; (C, {C: score})."""
    from sklearn.model_selection import KFold, StratifiedKFold

    multilabel = metric in MULTILABEL_METRICS
    if multilabel:
        folds = 3 if len(y) >= 6 else 1
        splitter = KFold(n_splits=3, shuffle=True, random_state=seed)
    else:
        counts = np.unique(y, return_counts=True)[1]
        folds = int(min(counts.min(), 3))
        splitter = StratifiedKFold(n_splits=max(folds, 2), shuffle=True, random_state=seed)
    if folds < 2:
        return 1.0, {}
    rng = np.random.default_rng(seed)
    scores = {}
    for C in grid:
        values = []
        for tr, va in splitter.split(X, y):
            if multilabel and not y[va].any():
                continue
            values.append(score(metric, y[va], _fit_predict(classifier, C, X[tr], y[tr], X[va], dropout, copies,
                                                            rng, seed, multilabel)))
        scores[C] = float(np.mean(values)) if values else 0.0
    best = max(grid, key=lambda c: (scores[c], -abs(np.log10(c))))   # ties: the C nearest to 1
    return best, scores


def _train_and_test(Xtr, ytr, Xte, yte, classifier, dropout, copies, rng, cv_seed, fit_seed, grid, metric):
    """Scale, choose C on the training rows, train, score the test rows: (score, C)."""
    scale = np.sqrt(Xtr.shape[1]) / (np.mean(np.linalg.norm(Xtr, axis=1)) or 1.0)
    Xtr, Xte = Xtr * scale, Xte * scale
    C, _ = choose_C(Xtr, ytr, classifier, grid, dropout, copies, seed=cv_seed, metric=metric)
    out = _fit_predict(classifier, C, Xtr, ytr, Xte, dropout, copies, rng, fit_seed, metric in MULTILABEL_METRICS)
    return score(metric, yte, out), C


def _summary(scores, chosen, metric, tested):
    r = {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "scores": [float(a) for a in scores],
         "C": chosen, "test_images": tested}
    if metric == "accuracy":
        r["accuracies"] = r["scores"]
    return r


def _targets(y, metric, classes=None):
    """Labels as the classifier sees them: strings, or (multi-label) a bool matrix; and the class list."""
    if metric in MULTILABEL_METRICS:
        return label_matrix(y, classes)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(METRICS)}")
    y = np.asarray(y).astype(str)
    return y, sorted(set(y))


def _check_features(X, target, what="features"):
    """One finite feature row per label, or a ValueError saying which is wrong."""
    if X.ndim != 2 or len(X) != len(target):
        raise ValueError(f"{what}: {len(X)} rows of shape {X.shape[1:]} for {len(target)} labels "
                         f"(one (D,) row per label expected)")
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if len(bad):
        raise ValueError(f"{what}: {len(bad)} row(s) hold NaN or inf, e.g. row {int(bad[0])}")


def evaluate(X, y, classifier="logreg", per_class=30, splits=5, dropout=False, copies=10, seed=0, grid=C_GRID,
             test_per_class=None, metric="accuracy", on_split=None):
    """The protocol above for one setting: {"mean", "std", "scores", "C", "test_images"} (scores in 0..1, one
    per split; for the metric "accuracy" also "accuracies", the same list). on_split(): after each split."""
    X = np.asarray(X, np.float32)
    target, classes = _targets(y, metric)
    _check_features(X, target)
    multilabel = metric in MULTILABEL_METRICS
    if multilabel and test_per_class:
        raise ValueError("a fixed number of test images per class is for single-label data (metric accuracy)")
    scores, chosen, tested = [], [], []
    for s in range(splits):
        rng = np.random.default_rng([seed, per_class, s])
        if multilabel:
            train = multilabel_train(target, per_class, rng, classes)
            test = np.setdiff1d(np.arange(len(target)), train)
        else:
            train, test = per_class_split(target, per_class, rng, test_per_class)
        value, C = _train_and_test(X[train], target[train], X[test], target[test], classifier, dropout, copies,
                                   rng, seed * 1000 + s, s, grid, metric)
        scores.append(value)
        chosen.append(C)
        tested.append(int(len(test)))
        if on_split:
            on_split()
    return _summary(scores, chosen, metric, tested)


def evaluate_shift(source, target, setting="ST", classifier="logreg", per_class=None, target_per_class=3,
                   splits=5, dropout=False, copies=10, seed=0, grid=C_GRID, metric="accuracy", on_split=None):
    """Domain shift: ``source`` and ``target`` are (X, labels); ``setting`` S, T or ST (module docstring).

    per_class: source images per class for training (None: all); target_per_class: labelled target images
    per class (the T and ST training data; drawn in S too, so the three settings test on the same images)."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose from {SETTINGS}")
    if setting != "S" and not target_per_class:
        raise ValueError(f"setting {setting} trains on labelled target images: target_per_class must be >= 1")
    Xs, Xt = np.asarray(source[0], np.float32), np.asarray(target[0], np.float32)
    if Xs.shape[1] != Xt.shape[1]:
        raise ValueError(f"source features are {Xs.shape[1]}-d but target features {Xt.shape[1]}-d")
    multilabel = metric in MULTILABEL_METRICS
    ys, classes = _targets(source[1], metric)
    yt, _ = _targets(target[1], metric, classes if multilabel else None)
    _check_features(Xs, ys, "source features")
    _check_features(Xt, yt, "target features")
    if not multilabel:
        unseen = sorted(set(yt) - set(ys))
        if unseen:
            raise ValueError(f"target classes missing from the source: {unseen[:5]}")
        yt_classes = sorted(set(yt))
    scores, chosen, tested = [], [], []
    for s in range(splits):
        # the target draw has its own generator: the test set and T do not depend on the source's N
        target_rng = np.random.default_rng([seed, target_per_class, s])
        if target_per_class:
            tgt = _draw(yt, target_per_class, target_rng, classes if multilabel else yt_classes, multilabel, True)
        else:
            tgt = np.zeros(0, np.int64)
        rng = np.random.default_rng([seed, per_class or 0, target_per_class, s])
        src = _draw(ys, per_class, rng, classes, multilabel, leave_for_test=False)
        test = np.setdiff1d(np.arange(len(yt)), tgt)
        Xtr = {"S": Xs[src], "T": Xt[tgt], "ST": np.concatenate([Xs[src], Xt[tgt]])}[setting]
        ytr = {"S": ys[src], "T": yt[tgt], "ST": np.concatenate([ys[src], yt[tgt]])}[setting]
        value, C = _train_and_test(Xtr, ytr, Xt[test], yt[test], classifier, dropout, copies, rng,
                                   seed * 1000 + s, s, grid, metric)
        scores.append(value)
        chosen.append(C)
        tested.append(int(len(test)))
        if on_split:
            on_split()
    return _summary(scores, chosen, metric, tested)


# ---- many cells -------------------------------------------------------------------------


def _is_shift(feature_set):
    return isinstance(feature_set[1], tuple)


def plan_cells(feature_sets, classifiers=("logreg",), per_class=(30,), splits=5, dropout=(False,), copies=10,
               seed=0, metric="accuracy", test_per_class=None, settings=SETTINGS, target_per_class=3):
    """Every cell of a run, as the result dicts without the numbers (in run order).

    ``feature_sets``: (name, X, y) for one domain, or (name, (Xs, ys), (Xt, yt)) for a domain shift.
    per_class None (a domain shift only): every source image."""
    cells = []
    for fs in feature_sets:
        name = fs[0]
        if _is_shift(fs):
            (Xs, ys), (Xt, yt) = fs[1], fs[2]
            base = {"features": name, "fingerprint": fingerprint(Xs, ys) + fingerprint(Xt, yt),
                    "dim": int(np.asarray(Xs).shape[1]), "source_images": int(len(ys)),
                    "images": int(len(yt)), "classes": int(len(_targets(ys, metric)[1])),
                    "target_per_class": int(target_per_class)}
            modes = list(settings)
        else:
            X, y = fs[1], fs[2]
            base = {"features": name, "fingerprint": fingerprint(X, y), "dim": int(np.asarray(X).shape[1]),
                    "images": int(len(y)), "classes": int(len(_targets(y, metric)[1]))}
            modes = [None]
        for classifier in classifiers:
            for drop in dropout:
                for mode in modes:
                    for n in per_class:
                        cell = dict(base, classifier=classifier, dropout=bool(drop),
                                    dropout_copies=int(copies) if drop else 0,
                                    per_class=None if n is None else int(n), splits=int(splits), seed=int(seed),
                                    metric=metric)
                        if mode is not None:
                            cell["setting"] = mode
                        if test_per_class:
                            cell["test_per_class"] = int(test_per_class)
                        cells.append(cell)
    return cells


KEY_FIELDS = ("features", "fingerprint", "classifier", "dropout", "dropout_copies", "per_class", "splits", "seed",
              "metric", "setting", "target_per_class", "test_per_class")


def cell_key(cell):
    """What identifies a cell (its data, classifier and protocol), as a string."""
    return json.dumps([cell.get(k) for k in KEY_FIELDS])


def run_cell(cell, feature_set, on_split=None, grid=C_GRID):
    """The numbers of one planned cell: the cell dict with mean, std, scores and C added."""
    common = dict(classifier=cell["classifier"], per_class=cell["per_class"], splits=cell["splits"],
                  dropout=cell["dropout"], copies=cell["dropout_copies"] or 1, seed=cell["seed"], grid=grid,
                  metric=cell["metric"], on_split=on_split)
    if "setting" in cell:
        r = evaluate_shift(feature_set[1], feature_set[2], cell["setting"],
                           target_per_class=cell["target_per_class"], **common)
    else:
        r = evaluate(feature_set[1], feature_set[2], test_per_class=cell.get("test_per_class"), **common)
    return dict(cell, **r)


def run_protocol(feature_sets, classifiers=("logreg",), per_class=(30,), splits=5, dropout=(False,), copies=10,
                 seed=0, on_result=None, metric="accuracy", test_per_class=None, settings=SETTINGS,
                 target_per_class=3, done=None, on_split=None):
    """Every cell of ``plan_cells``; a list of result dicts.

    done: {cell_key: result} of cells already computed (kept, not recomputed); on_result(r): after each
    newly computed cell; on_split(): after each split."""
    results = []
    by_name = {fs[0]: fs for fs in feature_sets}
    for cell in plan_cells(feature_sets, classifiers, per_class, splits, dropout, copies, seed, metric,
                           test_per_class, settings, target_per_class):
        if done and cell_key(cell) in done:
            results.append(done[cell_key(cell)])
            continue
        r = run_cell(cell, by_name[cell["features"]], on_split)
        results.append(r)
        if on_result:
            on_result(r)
    return results


# ---- output ---------------------------------------------------------------------------------


def _row_key(r):
    return (r["features"], r["classifier"] + (" + dropout" if r["dropout"] else ""), r.get("setting"))


def format_table(results):
    """A Markdown table: one row per (features, classifier, dropout[, setting]), one column per training size."""
    sizes = sorted({r["per_class"] for r in results}, key=lambda n: (n is None, n or 0))
    shift = any("setting" in r for r in results)
    rows = {}
    for r in results:
        rows.setdefault(_row_key(r), {})[r["per_class"]] = r
    head = "| features | classifier | " + ("setting | " if shift else "") + " | ".join(
        "all per class" if n is None else f"{n} per class" for n in sizes) + " |"
    lines = [head, "|" + "---|" * (len(sizes) + 2 + shift)]
    for (features, clf, setting), cells in rows.items():
        text = [f"{100 * cells[n]['mean']:.1f} ± {100 * cells[n]['std']:.1f}" if n in cells else ""
                for n in sizes]
        lines.append(f"| {features} | {clf} | " + (f"{setting} | " if shift else "") + " | ".join(text) + " |")
    return "\n".join(lines)


def results_json(results, complete=True, metric="accuracy", **protocol):
    """The JSON of a run: the protocol, whether every cell is done, and every result (per split)."""
    return json.dumps({"protocol": dict(protocol, C_grid=list(C_GRID), metric=METRICS[metric]),
                       "complete": bool(complete), "results": results}, indent=1)


def plot_curves(results, out, title=None):
    """The paper's Figure 4: the score against training images per class, one line per row of the table
    (mean ± std over the splits as error bars); written to ``out`` (PNG, SVG or PDF by its extension).
    Returns what was drawn: {line label: (N values, means in %, stds in %)}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {}
    for r in results:
        if r["per_class"] is not None:
            rows.setdefault(_row_key(r), []).append(r)
    if not rows:
        raise ValueError("nothing to plot: no result has a number of training images per class")
    metric = results[0].get("metric", "accuracy")
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    sizes = sorted({r["per_class"] for rs in rows.values() for r in rs})
    drawn = {}
    for (features, clf, setting), rs in rows.items():
        rs = sorted(rs, key=lambda r: r["per_class"])
        label = f"{features}, {clf}" + (f", {setting}" if setting else "")
        drawn[label] = ([r["per_class"] for r in rs], [100 * r["mean"] for r in rs], [100 * r["std"] for r in rs])
        ax.errorbar(*drawn[label][:2], yerr=drawn[label][2], marker="o", capsize=3, label=label)
    if len(sizes) > 1 and sizes[-1] / max(sizes[0], 1) >= 8:
        ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training images per class")
    ax.set_ylabel({"accuracy": "mean per-class accuracy (%)"}.get(metric, "mean average precision (%)"))
    splits = max(r.get("splits", 0) for r in results)
    ax.set_title(title or f"mean ± std over {splits} random splits")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return drawn


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
