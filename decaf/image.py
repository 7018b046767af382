"""Images in, net inputs out: decoding (Pillow), resize, crop, normalise, oversample.

A preprocessing *recipe* is plain data stored in each ``.decaf`` file::

    {"channels": "RGB",          # or "BGR" (Caffe models)
     "resize_shorter": 256,      # shorter side resized to this (aspect kept); null: no resize
     "resample": "bicubic",      # or "bilinear", "nearest", "lanczos"
     "crop": 224,                # square crop side (the net's input)
     "scale": 0.00392156862745,  # pixel values 0..255 are multiplied by this first
     "mean": [0.5, 0.5, 0.5],    # then per channel (x - mean) / std, in the output channel order
     "std": [0.5, 0.5, 0.5]}

The centre crop starts at round((W - crop) / 2), round((H - crop) / 2).
``oversample=True`` gives the ten crops of the original DeCAF and Caffe: the
four corners and the centre, each also mirrored left-right.
"""
import numpy as np
from PIL import Image, UnidentifiedImageError

DEFAULT_RECIPE = {"channels": "RGB", "resize_shorter": 256, "resample": "bicubic", "crop": 224,
                  "scale": 1 / 255.0, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


class ImageError(ValueError):
    """An image file is missing, unreadable or not an image."""


def load_image(path):
    """Decode any format Pillow reads into an RGB image; a clear ImageError otherwise."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: cannot read image ({exc})") from None


def resize_shorter(img, size, resample="bicubic"):
    w, h = img.size
    if min(w, h) == size:
        return img
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return img.resize(new, RESAMPLE[resample])


def _crop_boxes(w, h, crop, oversample):
    """(left, top) of each crop: the centre only, or 4 corners + centre."""
    centre = (int(round((w - crop) / 2)), int(round((h - crop) / 2)))
    if not oversample:
        return [centre]
    return [(0, 0), (w - crop, 0), (0, h - crop), (w - crop, h - crop), centre]


def to_array(img, recipe):
    """A PIL image (already cropped) as a (3, H, W) float32 array, normalised."""
    x = np.asarray(img, dtype=np.float32)
    if recipe.get("channels", "RGB") == "BGR":
        x = x[:, :, ::-1]
    x = x * np.float32(recipe.get("scale", 1.0))
    x = (x - np.asarray(recipe.get("mean", [0, 0, 0]), np.float32)) / np.asarray(recipe.get("std", [1, 1, 1]), np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def preprocess(img, recipe=None, oversample=False):
    """One image (a path or a PIL image) -> (1 or 10, 3, crop, crop) float32."""
    recipe = dict(DEFAULT_RECIPE, **(recipe or {}))
    if not isinstance(img, Image.Image):
        img = load_image(img)
    img = img.convert("RGB")
    if recipe.get("resize_shorter"):
        img = resize_shorter(img, recipe["resize_shorter"], recipe.get("resample", "bicubic"))
    crop = recipe["crop"]
    w, h = img.size
    if w < crop or h < crop:   # no resize asked and the image is small: scale it up to fit
        img = resize_shorter(img, crop, recipe.get("resample", "bicubic"))
        w, h = img.size
    crops = []
    for left, top in _crop_boxes(w, h, crop, oversample):
        crops.append(to_array(img.crop((left, top, left + crop, top + crop)), recipe))
    if oversample:
        crops += [c[:, :, ::-1] for c in crops]
    return np.ascontiguousarray(np.stack(crops))
