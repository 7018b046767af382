"""One batching loop from items to net outputs, for every consumer of images.

    recipe = net_recipe(net)
    for batch, outputs in forward_batches(net, image_batches(paths, recipe, batch_size=32), ["fc7"]):
        batch.positions      # which items are in this batch (bad items were skipped and reported)
        outputs["fc7"]       # one row per item: the mean over its crops

``batches(items, prepare, ...)`` is the loop itself: ``prepare(item)`` gives an item's crops
(n, ...) or raises; a bad item is reported to ``on_error(position, item, message)`` and skipped
(without ``on_error`` it is raised: training data must not skip silently). ``batch_size`` counts
**rows**, the net's batch axis: each batch holds ``max(1, batch_size // crops)`` whole items, so
10-crop oversampling never splits an image and never makes a forward bigger than asked.
classify, extract (features.py), patches and training data (data.ImageFolder) all go through it.
"""
import sys
import time
import weakref

import numpy as np

from .image import ImageError, decode, prepare
from .recipe import Recipe

BAD_ITEM = (ImageError, OSError, ValueError)   # whatever a file holds, the run goes on


class Batch:
    """``x``: float32 (items * crops, ...); ``positions``: each item's index in the input sequence."""

    __slots__ = ("x", "positions", "crops")

    def __init__(self, x, positions, crops):
        self.x, self.positions, self.crops = x, positions, crops

    def __len__(self):
        return len(self.positions)


def batches(items, prepare_item, batch_size, crops=1, on_error=None, stats=None):
    """Yield Batches of ``prepare_item(item)`` arrays (each (crops, ...)), skipping bad items.

    stats: a dict whose "preprocess_seconds" is increased by the time spent in prepare_item."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    per_batch = max(1, batch_size // crops)
    arrays, positions = [], []
    for pos, item in enumerate(items):
        t = time.perf_counter()
        try:
            x = prepare_item(item)
        except BAD_ITEM as exc:
            if on_error is None:
                raise
            on_error(pos, item, str(exc))
            continue
        finally:
            if stats is not None:
                stats["preprocess_seconds"] = stats.get("preprocess_seconds", 0.0) + time.perf_counter() - t
        if len(x) != crops:
            raise AssertionError(f"item {pos}: prepared {len(x)} crops, the batch expects {crops}")
        arrays.append(x)
        positions.append(pos)
        if len(positions) == per_batch:
            yield Batch(np.concatenate(arrays), positions, crops)
            arrays, positions = [], []
    if positions:
        yield Batch(np.concatenate(arrays), positions, crops)


def image_batches(images, recipe, batch_size, oversample=False, on_error=None, stats=None):
    """``batches`` over images (paths, PIL images or arrays) decoded and prepared by ``recipe``."""
    recipe = Recipe.from_dict(recipe)
    return batches(images, lambda image: prepare(decode(image, recipe.decode_mode), recipe, oversample),
                   batch_size, 10 if oversample else 1, on_error, stats)


def forward_batches(net, batches, outputs, stats=None):
    """Yield (batch, {blob: float32 (items, ...)}): the net's image input fed each batch, each
    output averaged over the crops of one item. stats["forward_seconds"] adds the forward time."""
    name, _ = image_input(net)
    for batch in batches:
        t = time.perf_counter()
        out = net.forward({name: batch.x}, outputs=list(outputs))
        if stats is not None:
            stats["forward_seconds"] = stats.get("forward_seconds", 0.0) + time.perf_counter() - t
        result = {}
        for blob in outputs:
            y = out[blob].astype(np.float32, copy=False)
            if batch.crops > 1:
                y = y.reshape((-1, batch.crops) + y.shape[1:]).mean(axis=1)
            result[blob] = y
        yield batch, result


# ---- the net side ----------------------------------------------------------------------------


def image_input(net):
    """The name and (C, H, W) shape of the net's image input."""
    for name, shape in net.input_shapes.items():
        if len(shape) == 3:
            return name, shape
    raise ValueError(f"net {net.name!r} has no image input (inputs: {net.input_shapes})")


def net_recipe(net):
    """The recipe stored with the net (``net.meta["preprocess"]``), else the default sized to the
    net's input; for the net's channel count, and checked against its input shape."""
    name, shape = image_input(net)
    c, h, w = shape
    stored = (getattr(net, "meta", None) or {}).get("preprocess")
    if c not in (1, 3):
        raise ValueError(f"net {net.name!r}: the image input {name!r} has {c} channels (decaf reads 1 or 3)")
    if stored is None:
        recipe = Recipe.from_dict({"resize_shorter": h, "crop": h})
        _warn_no_recipe(net, recipe)
    else:
        recipe = Recipe.from_dict(stored)
    recipe = recipe.for_channels(c)
    if recipe.shape != tuple(shape):
        raise ValueError(f"net {net.name!r}: the image input {name!r} is {tuple(shape)} but the preprocessing "
                         f"recipe gives {recipe.shape} (crop {recipe.crop}, channels {recipe.channels}, "
                         f"layout {recipe.layout})")
    return recipe



_WARNED = weakref.WeakSet()     # nets already warned about (once per net and process)


def _warn_no_recipe(net, recipe):
    """Say once per net (on stderr) that images go in by a guessed recipe: a converted net
    without its own (Caffe's BGR 0..255 nets above all) would get wrong pixels silently."""
    try:
        if net in _WARNED:
            return
        _WARNED.add(net)
    except TypeError:            # not weak-referenceable: warn every time rather than never
        pass
    from .recipe import describe
    print(f"warning: net {net.name!r} stores no preprocessing recipe; its images get decaf's default "
          f"({describe(recipe.for_channels(image_input(net)[1][0]))}). If it was trained otherwise, convert "
          f"it again with its recipe (decaf convert --mean/--scale/--std/--channels/--resize, or --preprocess)",
          file=sys.stderr)
