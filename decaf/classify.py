"""Classify images with a net that has a probability output and class labels."""
import numpy as np

from .image import ImageError, preprocess


def prob_blob(net):
    """The blob holding class probabilities: the Softmax layer's top, else the last output."""
    for layer in reversed(net.order):
        if layer.type_name == "Softmax":
            return layer.top_names[0]
    return net.output_names[-1]


def classify(net, images, top=5, oversample=False, batch_size=10, on_error=None):
    """Top-``top`` classes for each image path or PIL image.

    Returns a list with, per image, {"path", "top": [{"index", "name", "prob"}]}.
    Unreadable images get {"path", "error"} and the rest go on; ``on_error``
    is called with (path, message) for each of them.
    """
    recipe = (getattr(net, "meta", None) or {}).get("preprocess")
    labels = (getattr(net, "meta", None) or {}).get("labels")
    blob = prob_blob(net)
    results = [None] * len(images)
    crops, owners = [], []

    def flush():
        if not crops:
            return
        probs = net.forward(data=np.concatenate(crops), outputs=[blob])[blob]
        probs = probs.reshape(probs.shape[0], -1)
        start = 0
        for i, n in owners:
            p = probs[start:start + n].mean(axis=0)   # average the crops of one image
            start += n
            order = np.argsort(-p, kind="stable")[:top]
            results[i] = {"path": str(images[i]), "top": [
                {"index": int(k), "name": labels[k] if labels else str(k), "prob": float(p[k])} for k in order]}
        crops.clear()
        owners.clear()

    for i, image in enumerate(images):
        try:
            x = preprocess(image, recipe, oversample=oversample)
        except ImageError as exc:
            results[i] = {"path": str(image), "error": str(exc)}
            if on_error:
                on_error(image, str(exc))
            continue
        crops.append(x)
        owners.append((i, x.shape[0]))
        if sum(c.shape[0] for c in crops) >= batch_size:
            flush()
    flush()
    return results
