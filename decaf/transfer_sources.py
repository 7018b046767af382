"""Where ``decaf transfer`` gets features: an extracted ``.npz``, or images it extracts itself.

A source is a ``FEATURES.npz`` written by ``decaf extract``, or a folder (labels = first
subfolder) or list file of images, extracted here with a model (``--model``, repeatable) and
kept in a cache so a second run, or a resumed one, does not extract again.

List files may give a bounding box per image (CUB-200-2011 style)::

    PATH LABEL X Y W H      # X, Y: the box's top-left corner in pixels; W, H: its size

Fields are separated by a tab (then a path may contain spaces) or by spaces. The box is
enlarged ``box_scale`` times (default 1.5, the DeCAF paper's CUB crops) about its centre,
clipped to the image, and the crop then goes through the net's recipe like a whole image.
Lines with two fields or one (``PATH [LABEL]``) are whole images. A box that is not a box
(non-positive size, outside the image) skips that image, reported like an unreadable file.
For multi-label data (``--metric map``) LABEL is a comma-separated set (``person,dog``).

``resize``: "warp" (both sides to the recipe's resize size, aspect ratio not kept: the paper's
256x256) or "shorter" (shorter side, aspect kept) replaces the way the net's stored recipe resizes.

The cache: ``<decaf cache>/transfer/<source>-<model>-<key>.npz`` (``$DECAF_CACHE``, see
decaf.pretrained.cache_dir), the key a sha256 of the model's weights, the blobs, the recipe,
the box scale and every image's path, label, box, size and modification time. Folders and plain
list files go through ``decaf.features.extract`` (resumable shards); lists with boxes through the
same batching loop (``decaf.pipeline``), written when complete.
"""
import hashlib
import io
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

FEATURE_EXTENSIONS = (".npz",)


class Entry:
    """One image of a list file: absolute path, label, box (x, y, w, h) or None, path relative to the list."""

    __slots__ = ("path", "label", "box", "relpath")

    def __init__(self, path, label, box, relpath):
        self.path, self.label, self.box, self.relpath = path, label, box, relpath


def _number(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_box_list(path):
    """The entries of a list file whose lines are ``PATH [LABEL [X Y W H]]``."""
    base = os.path.dirname(os.path.abspath(path))
    entries = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = [x.strip() for x in line.split("\t")] if "\t" in line else line.split()
            box = None
            if len(fields) >= 6 and all(_number(x) is not None for x in fields[-4:]):
                box = tuple(_number(x) for x in fields[-4:])
                image, label = " ".join(fields[:-5]), fields[-5]
            elif "\t" in line and len(fields) != 2:
                raise ValueError(f"{path}:{lineno}: expected PATH<tab>LABEL[<tab>X<tab>Y<tab>W<tab>H], "
                                 f"got {len(fields)} fields")
            elif len(fields) >= 2:     # spaces: the label is the last field, the path the rest
                image, label = " ".join(fields[:-1]), fields[-1]
            else:
                image, label = fields[0], ""
            full = os.path.normpath(os.path.join(base, os.path.expanduser(image)))
            entries.append(Entry(full, label, box, image))
    return entries


def box_crop(size, box, scale=1.5):
    """The (left, top, right, bottom) pixel window of ``box`` (x, y, w, h) enlarged ``scale`` times about its
    centre and clipped to an image of ``size`` (width, height); ValueError if nothing is left."""
    width, height = size
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise ValueError(f"box {box}: width and height must be positive")
    cx, cy = x + w / 2, y + h / 2
    left, right = max(0, math.floor(cx - scale * w / 2)), min(width, math.ceil(cx + scale * w / 2))
    top, bottom = max(0, math.floor(cy - scale * h / 2)), min(height, math.ceil(cy + scale * h / 2))
    if right <= left or bottom <= top:
        raise ValueError(f"box {box} lies outside the {width}x{height} image")
    return left, top, right, bottom


def with_resize(recipe, way):
    """``recipe`` resizing its way (None: unchanged), "warp" or "shorter", to the same size."""
    if way is None:
        return recipe
    if way not in ("warp", "shorter"):
        raise ValueError(f"resize must be 'warp' or 'shorter', got {way!r}")
    size = recipe.resize_warp or recipe.resize_shorter or recipe.crop
    if way == "warp":
        return replace(recipe, resize_warp=size, resize_shorter=None)
    return replace(recipe, resize_shorter=size, resize_warp=None)


def has_boxes(path):
    return os.path.splitext(path)[1].lower() in (".txt", ".lst", ".list") and any(
        e.box is not None for e in read_box_list(path))


def _cache_key(net, blobs, recipe, box_scale, source, entries):
    from .features import collect_images, net_fingerprint

    h = hashlib.sha256(json.dumps({"net": net_fingerprint(net), "blobs": list(blobs), "recipe": recipe.to_dict(),
                                   "box_scale": box_scale}, sort_keys=True).encode())
    if entries is None:
        entries = [Entry(i.source, i.label, None, i.relpath) for i in collect_images(source)[0]]
    for e in entries:
        try:
            st = os.stat(e.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "-"
        h.update(f"{e.path}\0{e.label}\0{e.box}\0{stamp}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def _strings(values):
    return np.asarray(list(values), dtype=str) if len(values) else np.zeros(0, dtype="<U1")


def box_features(net, entries, blobs, batch_size=32, box_scale=1.5, on_error=None, on_image=None):
    """Features of ``blobs`` for list entries (box crops where given): a dict like ``decaf.features.extract``'s."""
    from .image import decode, prepare
    from .pipeline import batches, forward_batches, net_recipe

    recipe = net_recipe(net)
    skipped, errors = [], []

    def prepare_entry(e):
        img = decode(e.path, recipe.decode_mode)
        if e.box is not None:
            img = img.crop(box_crop(img.size, e.box, box_scale))
        return prepare(img, recipe)

    def bad(pos, entry, message):
        skipped.append(entry.relpath)
        errors.append(message.replace(entry.path, entry.relpath))
        if on_error:
            on_error(entry.relpath, message)
        if on_image:
            on_image(1)

    parts, good = {b: [] for b in blobs}, []
    for batch, out in forward_batches(net, batches(entries, prepare_entry, batch_size, 1, on_error=bad), blobs):
        for name, y in out.items():
            parts[name].append(y.reshape(len(y), -1))
        good.extend(batch.positions)
        if on_image:
            on_image(len(batch))
    if not good:
        raise ValueError("no image of the list could be read")
    result = {name: np.concatenate(parts[name]) for name in blobs}
    result.update(paths=_strings([entries[i].relpath for i in good]), labels=_strings([entries[i].label for i in good]),
                  skipped=_strings(skipped), skipped_errors=_strings(errors))
    return result


def _save_npz(path, arrays):
    from .io.blobfile import _write_atomically

    def write(stream):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        stream.write(buffer.getvalue())
    _write_atomically(os.fspath(path), write)


def image_feature_file(net, model_name, source, blobs, resize=None, box_scale=1.5, batch_size=32, progress=False,
                       on_error=None, cache=None):
    """The cached ``.npz`` of ``blobs`` of ``net`` for the images of ``source`` (folder or list file),
    extracting them if needed; returns its path."""
    from .pipeline import net_recipe
    from .pretrained import cache_dir

    for name in blobs:
        if name not in net.blobs:
            raise KeyError(f"net {net.name!r} has no blob {name!r}; its blobs are {list(net.blobs)}")
    recipe = with_resize(net_recipe(net), resize)
    net.meta = dict(getattr(net, "meta", None) or {}, preprocess=recipe.to_dict())
    entries = read_box_list(source) if has_boxes(source) else None
    key = _cache_key(net, blobs, recipe, box_scale if entries else None, source, entries)
    folder = Path(cache) if cache else cache_dir() / "transfer"
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(os.path.abspath(source)).stem or "images"
    out = folder / f"{stem}-{Path(str(model_name)).stem}-{key}.npz"
    if out.exists():
        return out
    if entries is None:
        from .features import extract
        extract(net, source, blobs=list(blobs), batch_size=batch_size, out=out, progress=progress,
                on_error=on_error)
        return out
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(entries), unit="img", desc=f"extract {stem} ({model_name})", leave=False)
    try:
        arrays = box_features(net, entries, blobs, batch_size, box_scale, on_error, bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    info = {"model": str(model_name), "blobs": list(blobs), "preprocess": recipe.to_dict(), "box_scale": box_scale}
    arrays.update(root=np.asarray(os.path.dirname(os.path.abspath(source))), info=np.asarray(json.dumps(info)))
    _save_npz(out, arrays)
    return out


def is_feature_file(path):
    return os.path.splitext(os.fspath(path))[1].lower() in FEATURE_EXTENSIONS
