"""Training data: sources of examples and a seeded minibatch iterator over them.

A *source* holds N labelled examples: ``len(source)``, ``source.labels`` (int64, shape (N,)),
``source.shape`` (one example's shape), ``source.get(indices)`` -> float32 (n, *shape) and
``source.subset(indices)``. Two kinds:

* ``ArraySource(x, y)``: arrays in memory (x: (N, ...), y: N integer labels);
* ``ImageFolder(root, size)``: ``root/<class>/<image>``, one subfolder per class (classes sorted
  by name -> labels 0..K-1); each image goes through the same decoder, recipe and batching loop
  as inference (decaf/image.py, decaf/pipeline.py): resized to ``size`` (shorter side, or warped
  if the recipe warps) and centre-cropped to size x size. A centre crop of that array to the
  net's input (``Batches(crop=...).eval_batches``) is bit for bit what classify and extract feed
  the net with ``folder.recipe`` cropped to that input (``dict(folder.recipe, crop=input)``).

``Batches(source, batch_size, seed=...)`` deals training minibatches forever: each epoch is a
permutation of the N examples (drawn from the iterator's own generator when ``shuffle``) and a
batch that runs past the end of an epoch is completed from the next one, so every batch has
``batch_size`` examples. Optional augmentation per example, with the same generator: zero
padding by ``pad`` pixels, a random ``crop`` x ``crop`` window (``pad`` alone crops back to the
original size), a left-right mirror with probability 1/2. ``Batches.state()`` (JSON-able, plus
the epoch's order as an array) and ``set_state`` capture the position and the generator
exactly: the same seed gives the same batches, and a restored state continues the same stream.
``Batches.eval_batches()`` walks the examples once, in order, with centre crops and no mirroring
(for evaluation).
"""
import os

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def check_labels(y, n=None, num_classes=None, what="labels"):
    """y as an int64 (N,) array; a clear ValueError for wrong counts, non-integers or a bad range."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{what}: expected one label per example (shape (N,)), got shape {y.shape}")
    if n is not None and len(y) != n:
        raise ValueError(f"{what}: {len(y)} labels for {n} examples (the counts must match)")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(f"{what}: labels must be whole numbers (class indices)")
    elif y.dtype.kind not in "iub":
        raise ValueError(f"{what}: labels must be integers (class indices), got dtype {y.dtype}")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise ValueError(f"{what}: label {int(y.min())} is negative (class indices start at 0)")
    if num_classes is not None and len(y) and y.max() >= num_classes:
        bad = int(y.max())
        raise ValueError(f"{what}: label {bad} is out of range: the net has {num_classes} classes "
                         f"(labels 0..{num_classes - 1})")
    return y


class ArraySource:
    def __init__(self, x, y, classes=None):
        x = np.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"data: expected an array of examples (N, ...), got shape {x.shape}")
        if len(x) == 0:
            raise ValueError("data: no examples")
        if not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"data: expected numbers, got dtype {x.dtype}")
        self.labels = check_labels(y, len(x))
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.all(np.isfinite(self.x)):
            raise ValueError("data: the examples contain NaN or inf")
        self.classes = classes

    def __len__(self):
        return len(self.x)

    @property
    def shape(self):
        return self.x.shape[1:]

    def get(self, indices):
        return self.x[indices]

    def subset(self, indices):
        return ArraySource(self.x[indices], self.labels[indices], self.classes)


class ImageFolder:
    """Images in ``root/<class>/``; ``size``: the side of the square arrays (C, size, size).

    ``channels`` 1 (grey) or 3; ``recipe`` (a decaf.recipe.Recipe or its dict form) gives the
    channel order, resampling filter, scale, mean and std (keys a dict leaves out: RGB, x / 255,
    mean 0, std 1, bicubic). ``self.recipe`` is that recipe for size x size arrays
    (``Recipe.squared``). Decoded arrays are kept while they fit in ``cache_mb``."""

    TRAINING_DEFAULTS = {"channels": "RGB", "scale": 1 / 255.0, "mean": [0.0], "std": [1.0]}

    def __init__(self, root, size, channels=3, recipe=None, cache_mb=512, _files=None):
        from .recipe import Recipe
        self.root, self.size, self.channels = str(root), int(size), int(channels)
        if self.channels not in (1, 3):
            raise ValueError(f"ImageFolder: channels must be 1 or 3, got {channels}")
        if not isinstance(recipe, Recipe):
            given = dict(recipe or {})
            way = "resize_warp" if given.get("resize_warp") is not None else "resize_shorter"
            recipe = Recipe.from_dict({**self.TRAINING_DEFAULTS, **given, "crop": self.size, way: self.size})
        self.recipe = recipe.for_channels(self.channels).squared(self.size)
        self.cache_mb = cache_mb
        self._cache = {}
        if _files is None:
            self.classes, self.files, labels = self._scan(self.root)
        else:
            self.classes, self.files, labels = _files
        self.labels = np.asarray(labels, np.int64)

    @staticmethod
    def _scan(root):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root!r} does not exist or is not a folder")
        classes = sorted(d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
        if not classes:
            raise ValueError(f"image folder {root!r} has no class subfolders (expected {root}/<class>/<image>)")
        files, labels = [], []
        for label, name in enumerate(classes):
            folder = os.path.join(root, name)
            found = sorted(f for f in os.listdir(folder)
                           if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise ValueError(f"class folder {folder!r} has no images ({', '.join(IMAGE_EXTENSIONS)})")
            files += [os.path.join(folder, f) for f in found]
            labels += [label] * len(found)
        return classes, files, labels

    def __len__(self):
        return len(self.files)

    @property
    def shape(self):
        return (self.channels, self.size, self.size)

    def load(self, path):
        """One image file -> float32 (C, size, size)."""
        return self._prepared([path])[0]

    def _prepared(self, paths):
        """The arrays of ``paths`` through the one batching loop; an unreadable file is an error
        (a skipped example would shift every label after it)."""
        from .pipeline import image_batches
        return next(image_batches(paths, self.recipe, batch_size=len(paths))).x

    def get(self, indices):
        indices = [int(i) for i in indices]
        out = np.empty((len(indices),) + self.shape, np.float32)
        todo = sorted(set(indices) - self._cache.keys())
        fresh = dict(zip(todo, self._prepared([self.files[i] for i in todo]))) if todo else {}
        budget = self.cache_mb * 2**20 // max(out[0].nbytes if len(out) else 1, 1)
        for i, x in fresh.items():
            if len(self._cache) < budget:
                self._cache[i] = x
        for k, i in enumerate(indices):
            out[k] = fresh[i] if i in fresh else self._cache[i]
        return out

    def subset(self, indices):
        indices = np.asarray(indices, np.int64)
        return ImageFolder(self.root, self.size, self.channels, self.recipe, self.cache_mb,
                           _files=(self.classes, [self.files[i] for i in indices], self.labels[indices]))


def split(source, test_fraction=0.25, seed=0):
    """(train, test) subsets of a source, stratified: each class gives round(fraction * count)
    of its examples (at least one when it has two or more) to the test set, chosen with ``seed``."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"the test fraction must be between 0 and 1, got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(source.labels):
        idx = np.flatnonzero(source.labels == c)
        k = int(round(test_fraction * len(idx)))
        k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
        test.extend(rng.permutation(idx)[:k])
    test = np.sort(np.asarray(test, np.int64))
    train = np.setdiff1d(np.arange(len(source)), test)
    return source.subset(train), source.subset(test)


class Batches:
    def __init__(self, source, batch_size=64, shuffle=True, seed=0, crop=None, pad=0, mirror=False):
        if isinstance(source, tuple):
            source = ArraySource(*source)
        self.source = source
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if len(source) == 0:
            raise ValueError("data: no examples")
        self.shuffle, self.seed = bool(shuffle), int(seed)
        self.crop, self.pad, self.mirror = crop, int(pad), bool(mirror)
        if crop is not None or pad or mirror:
            if len(source.shape) != 3:
                raise ValueError(f"crop, pad and mirror need image examples (C, H, W), got shape {source.shape}")
            if self.pad and crop is None:      # pad, then crop back to the original size
                if source.shape[1] != source.shape[2]:
                    raise ValueError(f"pad without crop needs square examples, got {source.shape}: give crop")
                self.crop = source.shape[1]
            h, w = source.shape[1] + 2 * self.pad, source.shape[2] + 2 * self.pad
            if self.crop is not None and not 0 < self.crop <= min(h, w):
                raise ValueError(f"crop {self.crop} does not fit examples of {h}x{w} (after padding {self.pad})")
        self.rng = np.random.default_rng(self.seed)
        self.epoch, self.position = 0, 0
        self.order = self._new_order()

    def __len__(self):
        return len(self.source)

    @property
    def shape(self):
        """The shape of one example as the net sees it (after cropping)."""
        shape = self.source.shape
        if self.crop is not None:
            return (shape[0], self.crop, self.crop)
        return shape

    def _new_order(self):
        n = len(self.source)
        return self.rng.permutation(n) if self.shuffle else np.arange(n)

    def next(self):
        """The next training batch (x float32 (B, ...), y int64 (B,)), augmented."""
        picked = []
        need = self.batch_size
        while need:
            take = self.order[self.position:self.position + need]
            picked.append(take)
            need -= len(take)
            self.position += len(take)
            if self.position == len(self.order):
                self.epoch += 1
                self.position = 0
                self.order = self._new_order()
        idx = np.concatenate(picked)
        return self._augment(self.source.get(idx), train=True), self.source.labels[idx]

    __next__ = next

    def __iter__(self):
        return self

    def _augment(self, x, train):
        if self.pad:
            p = self.pad
            x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        if self.crop is not None:
            c = self.crop
            h, w = x.shape[2], x.shape[3]
            if train:
                tops = self.rng.integers(0, h - c + 1, len(x))
                lefts = self.rng.integers(0, w - c + 1, len(x))
                x = np.stack([xi[:, t:t + c, s:s + c] for xi, t, s in zip(x, tops, lefts)])
            else:
                t, s = (h - c) // 2, (w - c) // 2
                x = x[:, :, t:t + c, s:s + c]
        if self.mirror and train:
            flip = self.rng.random(len(x)) < 0.5
            x = x.copy()
            x[flip] = x[flip, :, :, ::-1]
        return np.ascontiguousarray(x, np.float32)

    def eval_batches(self, batch_size=None):
        """Every example once, in order: (x, y) with centre crops and no mirroring."""
        b = batch_size or self.batch_size
        for start in range(0, len(self.source), b):
            idx = np.arange(start, min(start + b, len(self.source)))
            yield self._augment(self.source.get(idx), train=False), self.source.labels[idx]

    # ---- exact state, for snapshots ---------------------------------------------
    def state(self):
        """(JSON-able info, {"order": array}) — the position in the stream and the generator."""
        info = {"epoch": self.epoch, "position": self.position, "n": len(self.source),
                "rng": self.rng.bit_generator.state, "batch_size": self.batch_size, "seed": self.seed}
        return info, {"order": self.order.copy()}

    def set_state(self, info, arrays):
        if info["n"] != len(self.source):
            raise ValueError(f"the snapshot's data iterator ran over {info['n']} examples, this data has "
                             f"{len(self.source)}: resume with the same training data")
        order = np.asarray(arrays["order"], np.int64)
        if order.shape != (len(self.source),):
            raise ValueError(f"the snapshot's data order has shape {order.shape}, expected ({len(self.source)},)")
        self.epoch, self.position = int(info["epoch"]), int(info["position"])
        self.rng.bit_generator.state = info["rng"]
        self.order = order


def digits(test_fraction=0.25, seed=0):
    """scikit-learn's 8x8 digits (1797 images, 10 classes) as (train, test) ArraySources:
    x = pixel / 16 in [0, 1], shape (N, 1, 8, 8); a stratified held-out split (``split``)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    return split(ArraySource(x, d.target, classes=[str(i) for i in range(10)]), test_fraction, seed)
