"""Classify images with a net that has a probability output and class labels."""
import numpy as np

from .pipeline import forward_batches, image_batches, net_recipe


def prob_blob(net):
    """The blob holding class probabilities: the top of the last layer with the "probabilities"
    role (Softmax), else the net's last output."""
    for layer in reversed(net.order):
        if "probabilities" in layer.roles:
            return layer.top_names[0]
    return net.output_names[-1]


def classify(net, images, top=5, oversample=False, batch_size=10, on_error=None):
    """Top-``top`` classes for each image path or PIL image.

    Returns a list with, per image, {"path", "top": [{"index", "name", "prob"}]}; the
    probabilities of the 10 crops are averaged with ``oversample``. ``batch_size`` counts crops
    (rows of one forward pass; whole images per batch, see decaf/pipeline.py). Unreadable images
    get {"path", "error"} and the rest go on; ``on_error`` is called with (path, message) for each.
    """
    labels = (getattr(net, "meta", None) or {}).get("labels")
    blob = prob_blob(net)
    results = [None] * len(images)

    def bad(pos, image, message):
        results[pos] = {"path": str(image), "error": message}
        if on_error:
            on_error(image, message)

    stream = image_batches(images, net_recipe(net), batch_size, oversample, on_error=bad)
    for batch, out in forward_batches(net, stream, [blob]):
        probs = out[blob].reshape(len(batch), -1)
        for pos, p in zip(batch.positions, probs):
            order = np.argsort(-p, kind="stable")[:top]
            results[pos] = {"path": str(images[pos]), "top": [
                {"index": int(k), "name": labels[k] if labels else str(k), "prob": float(p[k])} for k in order]}
    return results
