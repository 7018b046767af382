"""Images in, net inputs out: one decoder (Pillow) and one preprocessing path for everyone.

``decode`` turns any file or image into 8-bit "RGB" or "L", the same way for every consumer:

- EXIF orientation is applied (``ImageOps.exif_transpose``): a phone photo is upright.
- Transparency (RGBA, LA, a palette with a transparent colour) is composited on **white**, as a
  browser shows it on a white page. Dropping alpha instead would show whatever colour the
  transparent pixels happen to store, often black, which is not what the picture looks like.
- Palette images become RGB (through RGBA when they have transparency); CMYK, YCbCr and other
  modes are converted by Pillow.
- 16-bit images keep their high byte (v >> 8): what Pillow itself does for 16-bit RGB PNGs, so a
  16-bit grey PNG and a 16-bit RGB PNG of the same values give the same pixels (Pillow's own
  16-bit grey -> "L" conversion saturates at 255 instead). 32-bit integer images ("I") are read as
  16-bit values (clipped to 0..65535).
- Float images ("F", e.g. float TIFF) are taken as 0..1 (the usual convention of float image
  files): clipped to [0, 1], times 255, rounded; NaN becomes 0.
- Grey for a one-channel recipe is Pillow's "L" (ITU-R 601-2 luma: 299 R + 587 G + 114 B, /1000);
  a grey image put through an RGB recipe has its value in all three channels.

``prepare`` applies a ``decaf.recipe.Recipe`` to a decoded image: resize (shorter side or warp,
with the recipe's filter), then crop(s), then ``to_array`` (channel order, scale, mean/std, layout).
The **centre crop** is the centre ``crop`` x ``crop`` of the image's central square (side: its
shorter side), every offset rounded down. After a shorter-side resize to S, that square is exactly
what training data keeps (``ImageFolder`` with size S), so a centre crop of the kept array, as
``data.Batches`` takes it, gives the very same pixels as inference. ``oversample=True`` gives the
ten crops of the original DeCAF and Caffe: the four corners (of the whole resized image) and the
centre, then each of those mirrored left-right. An image smaller than the crop (a recipe without
resize) has its shorter side scaled up to the crop first.
"""
import os
import stat
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .recipe import DEFAULT, Recipe

RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
            "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageError(ValueError):
    """An image file is missing, unreadable or not an image."""


# ---- decoding ----------------------------------------------------------------------------


def decode(source, mode="RGB"):
    """A path, PIL image or uint8 array -> an upright 8-bit PIL image in ``mode`` ("RGB" or "L").

    Unreadable files raise ImageError naming the file."""
    if mode not in ("RGB", "L"):
        raise ValueError(f"decode: mode must be 'RGB' or 'L', got {mode!r}")
    if isinstance(source, np.ndarray):
        source = Image.fromarray(source)
    if isinstance(source, Image.Image):
        return _canonical(ImageOps.exif_transpose(source), mode)
    _check_regular_file(source)
    try:
        with warnings.catch_warnings():     # Pillow's bomb warning: decaf's own limit (_check_pixels) decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source)
        with img:
            _check_pixels(source, img)
            img.load()
            return _canonical(ImageOps.exif_transpose(img), mode)
    except FileNotFoundError:
        raise ImageError(f"{source}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{source}: cannot read image ({exc})") from None


ENV_MAX_PIXELS = "DECAF_MAX_IMAGE_PIXELS"
MAX_PIXELS = 100_000_000     # width x height of one image: 100 MP (a 12000 x 8000 scan) decodes to 300 MB


def max_pixels():
    """The largest image (width x height) ``decode`` reads: ``DECAF_MAX_IMAGE_PIXELS`` or 100 M."""
    text = os.environ.get(ENV_MAX_PIXELS, "").strip()
    if not text:
        return MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{ENV_MAX_PIXELS} must be a positive number of pixels, got {text!r}")
    return value


def _check_pixels(source, img):
    """A small file can declare a huge image (a 500 KB PNG of 13370 x 13370 decodes to 540 MB):
    the size comes from the header, so it is checked before any pixel is decoded."""
    width, height = img.size
    limit = max_pixels()
    if width * height > limit:
        raise ImageError(f"{source}: {width}x{height} is {width * height} pixels, over the limit of {limit} "
                         f"(set {ENV_MAX_PIXELS} to read larger images)")


def _check_regular_file(source):
    """Only regular files are read as images: a FIFO or a device named like an image would block
    (or never end) in Pillow's read. File objects are the caller's business."""
    if not isinstance(source, (str, bytes, os.PathLike)):
        return
    try:
        st = os.stat(source)
    except FileNotFoundError:
        raise ImageError(f"{os.fsdecode(source)}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{os.fsdecode(source)}: cannot read image ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{os.fsdecode(source)}: is a directory, not an image")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{os.fsdecode(source)}: not a regular file (a FIFO, socket or device), not read")


def _canonical(img, mode):
    img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in _ALPHA:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == mode else img.convert(mode)


def _to_8bit(img):
    if img.mode in _SIXTEEN_BIT:
        values = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(values.astype(np.uint8), "L")
    if img.mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
        return Image.fromarray(np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8), "L")
    return img


# ---- the recipe on a decoded image --------------------------------------------------------


def resize_shorter(img, size, resample="bicubic"):
    w, h = img.size
    if min(w, h) == size:
        return img
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return img.resize(new, RESAMPLE[resample])


def resize(img, recipe):
    """The recipe's resize, then (no resize asked and the image too small) a scale-up to the crop."""
    if recipe.resize_warp is not None:
        if img.size != (recipe.resize_warp, recipe.resize_warp):
            img = img.resize((recipe.resize_warp, recipe.resize_warp), RESAMPLE[recipe.resample])
    elif recipe.resize_shorter is not None:
        img = resize_shorter(img, recipe.resize_shorter, recipe.resample)
    if min(img.size) < recipe.crop:
        img = resize_shorter(img, recipe.crop, recipe.resample)
    return img


def crop_boxes(w, h, crop, oversample=False):
    """(left, top) of each crop: the centre (see the module docstring), or 4 corners + centre."""
    side = min(w, h)
    centre = ((w - side) // 2 + (side - crop) // 2, (h - side) // 2 + (side - crop) // 2)
    if not oversample:
        return [centre]
    return [(0, 0), (w - crop, 0), (0, h - crop), (w - crop, h - crop), centre]


def to_array(img, recipe):
    """A PIL image (already cropped, in the recipe's decode mode) as a float32 array, normalised."""
    x = np.asarray(img, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.shape[2] != recipe.num_channels:
        raise ValueError(f"to_array: a {img.mode} image has {x.shape[2]} channel(s), the recipe's "
                         f"channels {recipe.channels!r} want {recipe.num_channels}")
    if recipe.channels == "BGR":
        x = x[:, :, ::-1]
    x = x * np.float32(recipe.scale)
    x = (x - np.asarray(recipe.mean, np.float32)) / np.asarray(recipe.std, np.float32)
    if recipe.layout == "CHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def mirror(x, recipe):
    """Left-right mirror of one example in the recipe's layout."""
    return np.ascontiguousarray(x[:, :, ::-1] if recipe.layout == "CHW" else x[:, ::-1, :])


def prepare(img, recipe, oversample=False):
    """A decoded PIL image -> (1 or 10, *recipe.shape) float32 by the recipe."""
    img = resize(img, recipe)
    crop = recipe.crop
    crops = [to_array(img.crop((left, top, left + crop, top + crop)), recipe)
             for left, top in crop_boxes(*img.size, crop, oversample)]
    if oversample:
        crops += [mirror(c, recipe) for c in crops]
    return np.stack(crops)


def as_recipe(recipe):
    """A Recipe from a Recipe, its stored dict form, or None (``decaf.recipe.DEFAULT``)."""
    return Recipe.from_dict(recipe)


def preprocess(source, recipe=None, oversample=False):
    """One image (a path, PIL image or array) -> (1 or 10, C, crop, crop) float32: decode + prepare."""
    recipe = as_recipe(recipe)
    return prepare(decode(source, recipe.decode_mode), recipe, oversample)
