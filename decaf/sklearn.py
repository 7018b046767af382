"""DeCAF features as a scikit-learn transformer: images in, one feature row per image out.

    from sklearn.pipeline import make_pipeline
    from sklearn.linear_model import LogisticRegression
    from decaf.sklearn import DeCAFFeatures

    model = make_pipeline(DeCAFFeatures("efficientnet_lite0", blob="pool"), LogisticRegression())
    model.fit(train_paths, train_labels)          # X: image paths, or uint8 images (N, H, W, 3)
    model.predict(test_paths)

``fit`` learns nothing (the net is fixed, as in DeCAF); ``transform`` runs the net through the one
batching loop (decaf/pipeline.py) with the net's own recipe and returns float32 (N, D): the blob
flattened, the mean over 10 crops with ``oversample=True``. The net is loaded on first use and
cached per process (by path and modification time), so the clones GridSearchCV makes share it;
``model`` may also be a Net object. An unreadable image raises ValueError naming it
(``on_error="raise"``), or gives a row of NaN and a warning (``on_error="nan"``): a transformer
cannot drop rows without breaking the alignment of X and y. A Net serves one thread at a time, so
use GridSearchCV's default (process) parallelism, not a threading backend.
"""
import os
import threading
import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

__all__ = ["DeCAFFeatures"]

_CACHE = {}
_CACHE_LOCK = threading.Lock()
ON_ERROR = ("raise", "nan")


def _load(model):
    from .net import Net
    if isinstance(model, Net):
        return model
    from .io import load_model
    key = model
    if model is not None and os.path.isfile(os.fspath(model)):
        stat = os.stat(model)
        key = (os.path.abspath(os.fspath(model)), stat.st_mtime_ns, stat.st_size)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE.clear()          # one net per process is what a pipeline needs; keep memory bounded
            _CACHE[key] = load_model(None if model is None else os.fspath(model))
        return _CACHE[key]


class DeCAFFeatures(TransformerMixin, BaseEstimator):
    """Features of a fixed net for images.

    Parameters
    ----------
    model : str, path or decaf.Net, default None
        A pretrained name, a ``.decaf`` file, or a Net; None is decaf's default (EfficientNet-Lite0).
    blob : str, default None
        The blob to return (default: the input of the last fully connected layer, e.g. "pool").
    batch_size : int, default 32
        Rows per forward pass.
    oversample : bool, default False
        Average the features of 10 crops per image.
    on_error : "raise" or "nan", default "raise"
        What an unreadable image gives: a ValueError, or a row of NaN (with a warning).
    """

    def __init__(self, model=None, blob=None, batch_size=32, oversample=False, on_error="raise"):
        self.model = model
        self.blob = blob
        self.batch_size = batch_size
        self.oversample = oversample
        self.on_error = on_error

    def fit(self, X=None, y=None):
        """Nothing to learn: checks the parameters and returns self."""
        self._check_params()
        return self

    def _check_params(self):
        if self.on_error not in ON_ERROR:
            raise ValueError(f"DeCAFFeatures: on_error must be one of {ON_ERROR}, got {self.on_error!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, (int, np.integer)) \
                or self.batch_size < 1:
            raise ValueError(f"DeCAFFeatures: batch_size must be a positive integer, got {self.batch_size!r}")

    def _net_and_blob(self):
        from .features import default_blob
        net = _load(self.model)
        blob = self.blob or default_blob(net)
        if blob not in net.blobs:
            raise ValueError(f"DeCAFFeatures: net {net.name!r} has no blob {blob!r}")
        return net, blob

    def transform(self, X):
        """(N, D) float32 features for X: a sequence of image paths (or PIL images), or a uint8
        array of images (N, H, W, 3) or (N, H, W)."""
        from .pipeline import forward_batches, image_batches, net_recipe
        self._check_params()
        images = _as_images(X)
        net, blob = self._net_and_blob()
        recipe = net_recipe(net)
        errors = []

        def bad(pos, item, message):
            if self.on_error == "raise":
                raise ValueError(f"DeCAFFeatures: image {pos}: {message}")
            errors.append((pos, message))

        dim = int(np.prod(net.blobs[blob].shape[1:]))
        out = np.full((len(images), dim), np.nan, dtype=np.float32)
        stream = image_batches(images, recipe, self.batch_size, self.oversample, on_error=bad)
        for batch, result in forward_batches(net, stream, [blob]):
            out[batch.positions] = result[blob].reshape(len(batch), -1)
        if errors:
            shown = "; ".join(f"{pos}: {msg}" for pos, msg in errors[:3])
            warnings.warn(f"DeCAFFeatures: {len(errors)} unreadable image(s) gave rows of NaN ({shown}"
                          f"{'...' if len(errors) > 3 else ''})", RuntimeWarning, stacklevel=2)
        return out

    def get_feature_names_out(self, input_features=None):
        net, blob = self._net_and_blob()
        dim = int(np.prod(net.blobs[blob].shape[1:]))
        return np.asarray([f"{blob}{i}" for i in range(dim)], dtype=object)

    def _more_tags(self):                     # scikit-learn < 1.6
        return {"requires_fit": False, "stateless": True, "X_types": ["string"], "preserves_dtype": []}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False            # fit learns nothing
        tags.input_tags.two_d_array = False  # X is images (paths or (N, H, W, 3) uint8), not a feature table
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []    # always float32
        tags.non_deterministic = False
        return tags


def _as_images(X):
    """A list of images for the pipeline from what ``transform`` accepts."""
    if isinstance(X, (str, os.PathLike)):
        raise TypeError("DeCAFFeatures.transform takes a sequence of images; got one path (wrap it in a list)")
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.dtype.kind in "US":
            return [str(x) for x in X.ravel()]
        if X.dtype != np.uint8 or X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[3] not in (1, 3, 4)):
            raise ValueError(f"DeCAFFeatures.transform takes image paths or uint8 images (N, H, W, 3) or (N, H, W); "
                             f"got a {X.dtype} array of shape {X.shape}")
        if X.ndim == 4 and X.shape[3] == 1:
            X = X[..., 0]
        return list(X)
    images = list(X)
    for i, x in enumerate(images):
        if isinstance(x, np.ndarray) and x.dtype != np.uint8:
            raise ValueError(f"DeCAFFeatures.transform: image {i} is a {x.dtype} array; images are uint8")
    return [os.fspath(x) if isinstance(x, os.PathLike) else x for x in images]
