"""Classify images with a net that has a probability output and class labels.

    net = decaf.load("model.decaf")                 # or decaf.pretrained.load_model()
    results = classify(net, ["cat.jpg", "photos/"], top=3)
    results[0]["top"][0]                            # {"index": 282, "name": "tiger cat", "prob": 0.61}
    results                                         # a table in a notebook (and in the REPL)

``results`` is a ``ClassifyResults``: a list (JSON-serialisable as it is) of one dict per image.
"""
import html
import os

import numpy as np

from .pipeline import forward_batches, image_batches, net_recipe


def prob_blob(net):
    """The blob holding class probabilities: the top of the last layer with the "probabilities"
    role (Softmax), else the net's last output."""
    for layer in reversed(net.order):
        if "probabilities" in layer.roles:
            return layer.top_names[0]
    return net.output_names[-1]


def expand_sources(sources):
    """Image paths from paths, directories (every image below, sorted) and list files
    (``.txt``/``.lst``/``.list``: the first column). Other entries (files, PIL images, arrays)
    stay as they are: a missing or broken file is skipped later and reported, not here."""
    from .features import LIST_EXTENSIONS, collect_images, read_list_file
    out = []
    for source in sources:
        if isinstance(source, (str, os.PathLike)):
            text = os.fspath(source)
            if os.path.isdir(text):
                items, _ = collect_images(text)
                out += [os.path.join(text, os.path.relpath(it.source, os.path.abspath(text))) for it in items]
                continue
            if os.path.splitext(text)[1].lower() in LIST_EXTENSIONS and os.path.isfile(text):
                out += [path for path, _ in read_list_file(text)]
                continue
        out.append(source)
    return out


def classify(net, images, top=5, oversample=False, batch_size=10, on_error=None):
    """Top-``top`` classes for each image (a path, PIL image or uint8 array; directories and list
    files are expanded, see ``expand_sources``).

    Returns a ``ClassifyResults`` list with, per image, {"path", "top": [{"index", "name",
    "prob"}]}; the probabilities of the 10 crops are averaged with ``oversample``. ``batch_size``
    counts crops (rows of one forward pass; whole images per batch, see decaf/pipeline.py).
    Unreadable images get {"path", "error"} and the rest go on; ``on_error`` is called with
    (path, message) for each.
    """
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    images = expand_sources(images)
    labels = (getattr(net, "meta", None) or {}).get("labels")
    blob = prob_blob(net)
    results = ClassifyResults([None] * len(images))

    def name(image):
        return str(image) if isinstance(image, (str, os.PathLike)) else f"<{type(image).__name__}>"

    def bad(pos, image, message):
        results[pos] = {"path": name(image), "error": message}
        if on_error:
            on_error(image, message)

    stream = image_batches(images, net_recipe(net), batch_size, oversample, on_error=bad)
    for batch, out in forward_batches(net, stream, [blob]):
        probs = out[blob].reshape(len(batch), -1)
        for pos, p in zip(batch.positions, probs):
            order = np.argsort(-p, kind="stable")[:top]
            results[pos] = {"path": name(images[pos]), "top": [
                {"index": int(k), "name": labels[k] if labels else str(k), "prob": float(p[k])} for k in order]}
    return results


class ClassifyResults(list):
    """The list ``classify`` returns, shown as a table: ``_repr_html_`` in Jupyter (the top classes
    with probability bars), a text table in the REPL."""

    def _rows(self):
        for r in self:
            if r is None:
                continue
            yield r["path"], r.get("error"), r.get("top", [])

    def __repr__(self):
        lines = [f"ClassifyResults: {len(self)} image(s)"]
        for path, error, top in self._rows():
            lines.append(f"  {path}")
            if error:
                lines.append(f"    error: {error}")
            for t in top:
                lines.append(f"    {t['prob']:7.2%}  {t['index']:>4}  {t['name']}")
        return "\n".join(lines)

    def _repr_html_(self):
        rows = []
        for path, error, top in self._rows():
            if error:
                cell = f"<span style='color:#b00'>{html.escape(error)}</span>"
            else:
                cell = "<br>".join(
                    f"<span style='display:inline-block;width:{max(1, round(120 * t['prob']))}px;height:0.8em;"
                    f"background:#4c78a8'></span> {t['prob']:.1%} {html.escape(str(t['name']))} "
                    f"<span style='color:#888'>({t['index']})</span>" for t in top)
            rows.append(f"<tr><td style='text-align:left'>{html.escape(path)}</td>"
                        f"<td style='text-align:left'>{cell}</td></tr>")
        return ("<table><thead><tr><th style='text-align:left'>image</th><th style='text-align:left'>top classes"
                f"</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
