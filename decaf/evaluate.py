"""Accuracy of a classifier net on labelled images: Caffe's ``caffe test`` for decaf.

    result = evaluate(net, "val/")            # a folder of class subfolders, or a list file
    result["top1"], result["topk"]            # fractions of the images read
    result["per_class"]                       # [{"index", "name", "images", "top1", "topk"}]
    result["confusion"]["matrix"]             # rows: true classes in the data; columns: the same, then "other"

The data (``read_labelled``):

* a folder with one subfolder per class (``val/tabby/x.jpg``): the subfolder names are matched
  to the net's class names (``net.meta["labels"]``): exactly, else ignoring case, underscores
  and the synonyms of a WordNet list ("tabby, tabby cat" answers to "tabby" and "tabby_cat"),
  else, for a folder named by a number, as a class index. A folder that matches no class, or
  several, is an error naming it (and the closest names).
* a list file (``.txt``/``.lst``/``.list``, lines ``PATH LABEL``): the label is a class index
  (or, if not a number, a class name matched as above). A line without a label is an error.

Predictions are the net's probability blob (decaf.classify.prob_blob) through the one batching
loop (decaf/pipeline.py): the net's recipe, ``oversample`` for 10 crops, unreadable images
skipped and reported in ``skipped`` (the rest are scored). The confusion matrix keeps the
classes present in the data (a 1000-class net on 5 folders gives 5 rows, not 1000): column j <
K counts images of row i's class predicted as class ``classes[j]``; the last column counts
predictions outside those classes.
"""
import difflib
import os
import re

import numpy as np

from .classify import prob_blob
from .pipeline import forward_batches, image_batches, net_recipe


class LabelError(ValueError):
    """A label of the data cannot be matched to a class of the net."""


def _norm(name):
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


def class_matcher(labels, classes):
    """A function name -> class index for a net with ``classes`` outputs and class names ``labels``."""
    exact, loose = {}, {}
    for i, label in enumerate(labels or []):
        exact.setdefault(label, []).append(i)
        for key in {_norm(label)} | {_norm(s) for s in label.split(",")}:
            loose.setdefault(key, set()).add(i)

    def match(name):
        found = set(exact[name]) if name in exact else loose.get(_norm(name), set())
        if len(found) == 1:
            return next(iter(found))
        if len(found) > 1:
            choices = ", ".join(f"{i} ({labels[i]!r})" for i in sorted(found))
            raise LabelError(f"label {name!r} names several classes of the net: {choices}; "
                             f"name the folder by the full class name or by its index")
        if re.fullmatch(r"\d+", str(name)) and int(name) < classes:
            return int(name)
        if not labels:
            raise LabelError(f"label {name!r}: the net has no class names, so labels must be class indices "
                             f"0..{classes - 1}")
        close = difflib.get_close_matches(_norm(name), list(loose), n=3, cutoff=0.6)
        hint = f" (closest: {', '.join(repr(c) for c in close)})" if close else ""
        raise LabelError(f"label {name!r} matches no class of the net{hint}; its {classes} classes are "
                         f"named like {labels[0]!r}; or use class indices 0..{classes - 1}")
    return match


def read_labelled(data):
    """([image paths], [label strings], kind "folder" or "list") from a folder or a list file."""
    from .features import LIST_EXTENSIONS, collect_images, read_list_file
    data = os.fspath(data)
    if os.path.isdir(data):
        items, _ = collect_images(data)
        loose = [it.relpath for it in items if not it.label]
        if loose:
            raise LabelError(f"{data}: images directly in the folder have no class ({loose[0]}...): put each "
                             f"class's images in a subfolder named after it")
        return [it.source for it in items], [it.label for it in items], "folder"
    if os.path.splitext(data)[1].lower() in LIST_EXTENSIONS:
        if not os.path.isfile(data):
            raise FileNotFoundError(f"{data}: no such list file")
        pairs = read_list_file(data)
        for path, label in pairs:
            if not label:
                raise LabelError(f"{data}: the line for {path} has no label ('PATH LABEL' per line)")
        return [p for p, _ in pairs], [label for _, label in pairs], "list"
    if not os.path.exists(data):
        raise FileNotFoundError(f"{data}: no such folder or list file")
    raise ValueError(f"{data}: expected a folder of class subfolders or a list file (.txt, .lst, .list)")


def evaluate(net, data, top_k=5, batch_size=10, oversample=False, progress=False, on_error=None,
             on_prediction=None):
    """Score ``net`` on ``data`` (a folder or list file, see the module docstring, or a pair
    (paths, label strings)). Returns the result dict described above.

    on_error(path, message) for each skipped image; on_prediction(row) for each scored image,
    row = {"path", "label", "label_name", "top": [indices], "probs": [probabilities], ...}."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if isinstance(data, tuple):
        paths, names = list(data[0]), [str(n) for n in data[1]]
        if len(paths) != len(names):
            raise ValueError(f"evaluate: {len(paths)} images but {len(names)} labels")
    else:
        paths, names, _ = read_labelled(data)
    if not paths:
        raise ValueError(f"{data}: no images found")
    blob = prob_blob(net)
    recipe = net_recipe(net)
    classes = int(np.prod(net.blobs[blob].shape[1:]))
    labels = (getattr(net, "meta", None) or {}).get("labels")
    if labels is not None and len(labels) != classes:
        labels = None
    match = class_matcher(labels, classes)
    by_name = {}
    for name in dict.fromkeys(names):
        by_name[name] = match(name)
    truth = np.array([by_name[n] for n in names], dtype=np.int64)
    k = min(top_k, classes)

    skipped = []

    def bad(pos, item, message):
        skipped.append({"path": str(paths[pos]), "error": message})
        if on_error:
            on_error(str(paths[pos]), message)
        if bar is not None:
            bar.update(1)

    bar = _bar(len(paths)) if progress else None
    scored, top = [], []
    try:
        stream = image_batches(paths, recipe, batch_size, oversample, on_error=bad)
        for batch, out in forward_batches(net, stream, [blob]):
            probs = out[blob].reshape(len(batch), -1)
            order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
            for pos, p, o in zip(batch.positions, probs, order):
                scored.append(pos)
                top.append(o)
                if on_prediction:
                    on_prediction({"path": str(paths[pos]), "label": int(truth[pos]), "label_name": names[pos],
                                   "top": [int(i) for i in o], "probs": [float(p[i]) for i in o]})
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return summarize(truth, scored, np.array(top, dtype=np.int64).reshape(len(scored), k), labels, names,
                     skipped, k, classes)


def summarize(truth, scored, top, labels, names, skipped, k, classes):
    """The result dict from the true class of every image, the positions scored and their top-k."""
    def name_of(i):
        return labels[i] if labels else str(i)

    y = truth[scored]
    n = len(scored)
    hit1 = top[:, 0] == y if n else np.zeros(0, bool)
    hitk = (top == y[:, None]).any(axis=1) if n else np.zeros(0, bool)
    present = sorted(set(int(c) for c in truth))
    folder = {}
    for pos, c in enumerate(truth):
        folder.setdefault(int(c), names[pos])
    per_class = []
    for c in present:
        rows = y == c
        m = int(rows.sum())
        per_class.append({"index": c, "name": name_of(c), "label": folder[c], "images": m,
                          "top1": float(hit1[rows].mean()) if m else None,
                          "topk": float(hitk[rows].mean()) if m else None})
    column = {c: j for j, c in enumerate(present)}
    matrix = np.zeros((len(present), len(present) + 1), dtype=np.int64)
    for t, p in zip(y, top[:, 0] if n else []):
        matrix[column[int(t)], column.get(int(p), len(present))] += 1
    scored_classes = [pc["top1"] for pc in per_class if pc["images"]]
    return {"images": len(truth), "scored": n, "skipped": skipped, "k": k, "classes": classes,
            "top1": float(hit1.mean()) if n else None, "topk": float(hitk.mean()) if n else None,
            "mean_class_top1": float(np.mean(scored_classes)) if scored_classes else None,
            "per_class": per_class,
            "confusion": {"classes": present, "names": [name_of(c) for c in present],
                          "columns": [name_of(c) for c in present] + ["other"], "matrix": matrix.tolist()}}


def _bar(total):
    import sys

    from tqdm import tqdm
    return tqdm(total=total, unit="img", desc="evaluate", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def plot_confusion(result, path, max_classes=60):
    """Draw the confusion matrix (rows normalised to fractions of each true class) into ``path``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = result["confusion"]
    matrix = np.asarray(conf["matrix"], dtype=np.float64)
    if len(matrix) > max_classes:
        raise ValueError(f"the confusion matrix has {len(matrix)} classes; a picture of more than {max_classes} "
                         f"is unreadable (the matrix is in the JSON)")
    totals = matrix.sum(axis=1, keepdims=True)
    fractions = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    size = 2.5 + 0.45 * len(matrix)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(matrix.shape[1]), [_short(c) for c in conf["columns"]], rotation=60, ha="right")
    ax.set_yticks(range(matrix.shape[0]), [_short(c) for c in conf["names"]])
    if len(matrix) <= 25:
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center",
                            color="white" if fractions[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top1 = result["top1"]
    ax.set_title(f"top-1 {top1:.1%} on {result['scored']} images" if top1 is not None else "no images scored")
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _short(name, limit=24):
    name = str(name).split(",")[0]
    return name if len(name) <= limit else name[:limit - 1] + "…"
