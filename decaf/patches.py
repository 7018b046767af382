"""Oquab et al. (CVPR 2014), "Learning and transferring mid-level image representations":
patches, their labels, and patch scores turned into image scores and score maps.

Boxes are ``(x0, y0, x1, y1)`` in pixels with exclusive ends: area = (x1 - x0) * (y1 - y0).

- ``patch_boxes``: square patches of side min(w, h) / lambda for lambda in ``SCALES`` on a
  regular grid: along each axis the first patch touches the start, the last touches the
  end, and neighbours overlap by at least ``overlap`` (50 %) of the side.
- ``label_patches``: a patch P is a positive of class o when some object box B of class o
  has |P ∩ B| >= 0.2 |P| and |P ∩ B| >= 0.6 |B| and P overlaps (any area) no other object
  box; every other patch is ``BACKGROUND``.
- ``subsample_background``: all positives and a random 10 % of the background patches.
- ``image_scores``: an image's score for class c is the mean over its patches of y_c ** k
  (k = 5): a few confident patches outweigh many lukewarm ones.
- ``score_map``: each pixel gets the mean score of the patches that cover it.
- ``patch_batches`` / ``patch_features``: each box cut from the decoded image (decaf.image.decode)
  and warped to the net's input by the net's recipe (``patch_recipe``), through the one batching
  loop (decaf/pipeline.py).
- ``overlay`` / ``save_overlay``: a score map blended on top of the image, as a PNG.
"""
import math

import numpy as np

SCALES = (1.0, 1.3, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6, 4.0)
BACKGROUND = "background"


# ---- sampling ---------------------------------------------------------------------------


def grid_positions(length, side, overlap=0.5):
    """Start offsets of patches of ``side`` pixels along an axis of ``length`` pixels.

    The first starts at 0, the last ends at ``length``, and consecutive starts are at most
    floor(side * (1 - overlap)) apart, so neighbours share at least ``overlap`` of a side.
    """
    if side > length:
        raise ValueError(f"patch side {side} is longer than the image side {length}")
    if side == length:
        return [0]
    max_step = max(1, int(math.floor(side * (1 - overlap))))
    n = int(math.ceil((length - side) / max_step)) + 1
    # rounding half up: floor(a + d + .5) - floor(a + .5) <= ceil(d) <= max_step, so the overlap survives
    return [int(math.floor(i * (length - side) / (n - 1) + 0.5)) for i in range(n)]


def patch_boxes(width, height, scales=SCALES, overlap=0.5):
    """All patches of an image: (boxes (M, 4) int, lambdas (M,)), larger patches first."""
    boxes, lambdas = [], []
    for lam in scales:
        side = max(1, int(round(min(width, height) / lam)))
        for y in grid_positions(height, side, overlap):
            for x in grid_positions(width, side, overlap):
                boxes.append((x, y, x + side, y + side))
                lambdas.append(lam)
    return np.asarray(boxes, np.int64).reshape(-1, 4), np.asarray(lambdas, np.float64)


# ---- labelling ---------------------------------------------------------------------------


def box_area(boxes):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def intersection_area(a, b):
    """(len(a), len(b)) areas of the pairwise intersections."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    return w * h


def label_patches(patches, boxes, box_labels, min_patch_fraction=0.2, min_box_fraction=0.6):
    """The class of each patch (a str array), ``BACKGROUND`` where no rule holds.

    Positive for class o: an object box B of class o with |P∩B| >= 0.2|P| and
    |P∩B| >= 0.6|B|, and no other object box meets P at all.
    """
    patches = np.asarray(patches).reshape(-1, 4)
    boxes = np.asarray(boxes).reshape(-1, 4)
    box_labels = [str(c) for c in box_labels]
    if len(box_labels) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(box_labels)} labels")
    if BACKGROUND in box_labels:
        raise ValueError(f"{BACKGROUND!r} is the background label and cannot name an object")
    labels = np.full(len(patches), BACKGROUND, dtype=object)
    if len(boxes) == 0:
        return labels.astype(str)
    inter = intersection_area(patches, boxes)
    enough = (inter >= min_patch_fraction * box_area(patches)[:, None]) & \
             (inter >= min_box_fraction * box_area(boxes)[None, :])
    touching = inter > 0
    for i in range(len(patches)):
        hits = np.flatnonzero(enough[i])
        if len(hits) == 1 and touching[i].sum() == 1:
            labels[i] = box_labels[hits[0]]
    return labels.astype(str)


def subsample_background(labels, fraction=0.1, rng=None):
    """Sorted indices of every positive patch and of round(fraction * count) background patches."""
    rng = rng if rng is not None else np.random.default_rng(0)
    labels = np.asarray(labels)
    background = np.flatnonzero(labels == BACKGROUND)
    keep = int(round(fraction * len(background)))
    chosen = rng.choice(background, keep, replace=False) if keep else np.zeros(0, np.int64)
    return np.sort(np.concatenate([np.flatnonzero(labels != BACKGROUND), chosen]).astype(np.int64))


# ---- scores ------------------------------------------------------------------------------------


def image_scores(patch_scores, k=5):
    """Per-class image score: the mean over patches of score ** k. (M, C) -> (C,)."""
    patch_scores = np.asarray(patch_scores, np.float64)
    if patch_scores.ndim == 1:
        patch_scores = patch_scores[:, None]
    return np.mean(patch_scores ** k, axis=0)


def score_map(boxes, scores, width, height):
    """Per-pixel mean of the scores of the patches covering the pixel.

    ``scores``: (M,) -> (height, width), or (M, C) -> (C, height, width). Pixels no
    patch covers get 0. Sums over rectangles are built with 2-D difference arrays,
    so the cost is O(M + width * height) per class, whatever the patch sizes.
    """
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64)
    single = scores.ndim == 1
    scores = scores.reshape(len(boxes), -1)
    x0 = np.clip(boxes[:, 0], 0, width)
    y0 = np.clip(boxes[:, 1], 0, height)
    x1 = np.clip(boxes[:, 2], 0, width)
    y1 = np.clip(boxes[:, 3], 0, height)
    ones = np.ones((len(boxes), 1))
    maps = []
    for values in [ones] + [scores[:, [c]] for c in range(scores.shape[1])]:
        diff = np.zeros((height + 1, width + 1))
        v = values[:, 0]
        np.add.at(diff, (y0, x0), v)
        np.add.at(diff, (y0, x1), -v)
        np.add.at(diff, (y1, x0), -v)
        np.add.at(diff, (y1, x1), v)
        maps.append(diff.cumsum(axis=0).cumsum(axis=1)[:height, :width])
    count, sums = maps[0], np.stack(maps[1:])
    out = np.where(count > 0.5, sums / np.maximum(count, 1), 0.0)
    return out[0] if single else out


# ---- patches through a net ---------------------------------------------------------------------


def patch_recipe(recipe):
    """The recipe for one patch: the box, cut from the decoded image, is warped to the crop size
    with the recipe's filter, then normalised like any image."""
    from dataclasses import replace

    from .recipe import Recipe

    recipe = Recipe.from_dict(recipe)
    return replace(recipe, resize_shorter=None, resize_warp=recipe.crop)


def _patch_stream(img, boxes, recipe, batch_size):
    from .image import decode, prepare
    from .pipeline import batches

    recipe = patch_recipe(recipe)
    img = decode(img, recipe.decode_mode)
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    return batches(boxes, lambda box: prepare(img.crop(tuple(int(v) for v in box)), recipe), batch_size)


def patch_batches(img, boxes, recipe, batch_size=32):
    """Yield (n, C, crop, crop) float32 batches: each box cut out and resized to the net's input."""
    for batch in _patch_stream(img, boxes, recipe, batch_size):
        yield batch.x


def patch_features(net, img, boxes, blob=None, batch_size=32):
    """(M, D) float32 features of ``blob`` (default: the classifier's input) for every patch box."""
    from .features import default_blob
    from .pipeline import forward_batches, net_recipe

    blob = blob or default_blob(net)
    out = [y[blob].reshape(len(b), -1)
           for b, y in forward_batches(net, _patch_stream(img, boxes, net_recipe(net), batch_size), [blob])]
    return np.concatenate(out) if out else np.zeros((0, int(np.prod(net.blobs[blob].shape[1:]))), np.float32)


def overlay(img, smap, alpha=0.6, cmap="jet", vmax=None, boxes=None):
    """A PIL image: ``img`` with the score map ``smap`` (H, W) blended in, more opaque where it is high.

    Scores are divided by ``vmax`` (default: the map's maximum); a score of 0 leaves the
    photo untouched. ``boxes`` are drawn as white rectangles.
    """
    import matplotlib
    from PIL import Image, ImageDraw

    img = np.asarray(img.convert("RGB") if hasattr(img, "convert") else img, np.float64)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    smap = np.asarray(smap, np.float64)
    if smap.shape != img.shape[:2]:
        raise ValueError(f"score map {smap.shape} does not match the image {img.shape[:2]}")
    top = vmax if vmax is not None else (smap.max() or 1.0)
    norm = np.clip(smap / top, 0, 1)
    colours = matplotlib.colormaps[cmap](norm)[..., :3] * 255
    weight = alpha * np.sqrt(norm)[..., None]      # low scores leave the photo visible
    blended = Image.fromarray(np.uint8(np.clip((1 - weight) * img + weight * colours, 0, 255)))
    if boxes is not None:
        draw = ImageDraw.Draw(blended)
        for b in np.asarray(boxes).reshape(-1, 4):
            draw.rectangle([int(b[0]), int(b[1]), int(b[2]) - 1, int(b[3]) - 1], outline=(255, 255, 255), width=2)
    return blended


def save_overlay(img, smap, path, **kw):
    """``overlay(img, smap, **kw)`` saved as a PNG at ``path``; returns ``path``."""
    overlay(img, smap, **kw).save(path, format="PNG")
    return path
