"""The preprocessing recipe: how a decoded image becomes a net input, as one frozen object.

Every consumer (classify, extract, patches, training data, the server) reads pixels through a
``Recipe``; each ``.decaf`` file stores one under ``decaf.preprocess`` as JSON (``to_dict``)::

    {"crop": 224,                # side of the square crop: the net's input H = W
     "resize_shorter": 256,      # shorter side resized to this, aspect kept; or null
     "resize_warp": null,        # or: both sides resized to this, aspect not kept (Caffe's 256x256)
     "resample": "bicubic",      # Pillow filter: nearest, bilinear, bicubic, lanczos, box, hamming
     "channels": "RGB",          # output channel order: RGB, BGR (Caffe models) or L (one grey channel)
     "scale": 0.00392156862745,  # pixel values 0..255 are multiplied by this first,
     "mean": [0.5, 0.5, 0.5],    # then (x - mean) / std per channel, in the output channel order
     "std": [0.5, 0.5, 0.5],
     "layout": "CHW"}            # axis order of one example (decaf nets read CHW)

Format 1 files stored the same keys without ``resize_warp`` and ``layout``; ``from_dict`` reads
both. A stored recipe's missing keys take the values of ``DEFAULT`` (as format 1 did).
A ``Recipe`` also reads as a mapping of that stored form (``recipe["crop"]``, ``dict(recipe)``),
so code written against the dict form keeps working.
"""
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

RESAMPLING = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
CHANNELS = {"RGB": 3, "BGR": 3, "L": 1}
LAYOUTS = ("CHW", "HWC")


@dataclass(frozen=True)
class Recipe(Mapping):
    crop: int
    resize_shorter: int | None = None
    resize_warp: int | None = None
    resample: str = "bicubic"
    channels: str = "RGB"
    scale: float = 1.0
    mean: tuple = (0.0,)       # one value applies to every channel
    std: tuple = (1.0,)
    layout: str = "CHW"

    def __post_init__(self):
        def positive(name, value, optional):
            if value is None and optional:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
                raise ValueError(f"recipe: {name} must be a positive whole number of pixels, got {value!r}")
            return int(value)

        set_ = object.__setattr__    # frozen: normalise the fields once, here
        set_(self, "crop", positive("crop", self.crop, False))
        for name in ("resize_shorter", "resize_warp"):
            size = positive(name, getattr(self, name), True)
            if size is not None and size < self.crop:
                raise ValueError(f"recipe: {name} {size} is smaller than the crop {self.crop}")
            set_(self, name, size)
        if self.resize_shorter is not None and self.resize_warp is not None:
            raise ValueError("recipe: give resize_shorter or resize_warp, not both")
        for name, allowed in (("resample", RESAMPLING), ("channels", tuple(CHANNELS)), ("layout", LAYOUTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"recipe: {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        scale = float(self.scale)
        if not math.isfinite(scale) or scale == 0:
            raise ValueError(f"recipe: scale must be a finite non-zero number, got {self.scale!r}")
        set_(self, "scale", scale)
        n = CHANNELS[self.channels]
        for name in ("mean", "std"):
            values = getattr(self, name)
            values = (values,) if isinstance(values, (int, float)) else tuple(values)
            if len(values) == 1:
                values = values * n
            if len(values) != n:
                raise ValueError(f"recipe: {name} has {len(values)} values, channels {self.channels!r} "
                                 f"has {n} (give one value, or one per channel)")
            values = tuple(float(v) for v in values)
            if not all(math.isfinite(v) for v in values) or (name == "std" and 0.0 in values):
                raise ValueError(f"recipe: {name} must be finite{' and non-zero' if name == 'std' else ''}, "
                                 f"got {list(values)}")
            set_(self, name, values)

    # ---- what a consumer asks -------------------------------------------------------------
    @property
    def num_channels(self):
        return CHANNELS[self.channels]

    @property
    def decode_mode(self):
        """The Pillow mode images are decoded into for this recipe: "L" or "RGB"."""
        return "L" if self.channels == "L" else "RGB"

    @property
    def shape(self):
        """One example's shape: (C, crop, crop) for CHW, (crop, crop, C) for HWC."""
        c, s = self.num_channels, self.crop
        return (c, s, s) if self.layout == "CHW" else (s, s, c)

    def for_channels(self, channels):
        """This recipe for a net that reads ``channels`` (1 or 3) channels.

        A colour recipe serves a grey net as channels "L" (Pillow's ITU-R 601 luma), which needs
        one mean and one std: the colour recipe's values must then be equal across channels."""
        if channels == self.num_channels:
            return self
        if channels == 1:
            if len(set(self.mean)) > 1 or len(set(self.std)) > 1:
                raise ValueError(f"recipe: a one-channel net needs one mean and std, the recipe has mean "
                                 f"{list(self.mean)} and std {list(self.std)}: store a recipe with channels 'L'")
            return replace(self, channels="L", mean=self.mean[:1], std=self.std[:1])
        raise ValueError(f"recipe: channels {self.channels!r} gives {self.num_channels} channel(s), "
                         f"the net reads {channels}")

    def squared(self, size):
        """This recipe resized (its way: shorter side or warp) to ``size`` and cropped to size x size:
        the arrays training data keeps, from which a centre ``crop`` gives this recipe's input."""
        if self.resize_warp is not None:
            return replace(self, resize_warp=size, crop=size)
        return replace(self, resize_shorter=size, crop=size)

    # ---- the stored form ---------------------------------------------------------------------
    def to_dict(self):
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_dict(cls, stored, base=None):
        """A Recipe from its stored form (format 1 or 2), a Recipe, or None (-> ``base``).
        Missing keys come from ``base`` (default ``DEFAULT``); unknown keys are an error."""
        base = DEFAULT if base is None else base
        if stored is None:
            return base
        if isinstance(stored, Recipe):
            return stored
        if not isinstance(stored, Mapping):
            raise ValueError(f"recipe: expected a JSON object, got {type(stored).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(stored) - known)
        if unknown:
            raise ValueError(f"recipe: unknown key(s) {unknown}; a recipe has {sorted(known)}")
        values = dict(stored)
        for mine, other in (("resize_shorter", "resize_warp"), ("resize_warp", "resize_shorter")):
            if values.get(mine) is not None and other not in values:
                values[other] = None     # naming one way to resize replaces the base's other way
        if "crop" in values and "resize_shorter" not in values and "resize_warp" not in values:
            for way in ("resize_shorter", "resize_warp"):     # a crop beyond the base's resize: resize to it
                if getattr(base, way) is not None and getattr(base, way) < values["crop"]:
                    values[way] = values["crop"]
        return replace(base, **values)

    # ---- read-only mapping of the stored form ------------------------------------------------
    def __getitem__(self, key):
        return self.to_dict()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self):
        return len(fields(self))


# The recipe of decaf's default network, EfficientNet-Lite0 (its PyTorch port normalises to [-1, 1]).
EFFICIENTNET_LITE0 = Recipe(crop=224, resize_shorter=256, resample="bicubic", channels="RGB",
                            scale=1 / 255.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
DEFAULT = EFFICIENTNET_LITE0

# Caffe's ImageNet models (CaffeNet, AlexNet, ...): BGR pixels 0..255, warped to 256x256 (aspect not
# kept), the per-channel mean of ilsvrc_2012_mean.binaryproto (B, G, R) subtracted, a 227 crop.
# Caffe's Python tools resize with bilinear interpolation.
CAFFE_IMAGENET_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
CAFFE_IMAGENET = Recipe(crop=227, resize_warp=256, resample="bilinear", channels="BGR", scale=1.0,
                        mean=CAFFE_IMAGENET_MEAN_BGR, std=(1.0,))


def caffe_default(crop):
    """Caffe's ImageNet recipe for a net whose input is ``crop`` x ``crop`` (warp to 256, or to
    the crop when the net reads more than 256 pixels)."""
    return replace(CAFFE_IMAGENET, crop=crop, resize_warp=max(256, crop))


def with_options(base, crop=None, resize=None, size=None, channels=None, scale=None, mean=None, std=None,
                 resample=None):
    """``base`` with the command-line style overrides given (None: keep the base's value).

    resize: "warp" or "shorter" (the way), size: its side; crop: the crop side. A new crop
    larger than the base's resize side grows the resize to the crop. channels: "rgb", "bgr"
    or "l" (any case); mean/std: one value or one per channel (in the output channel order)."""
    values = {}
    way = {"warp": "resize_warp", "shorter": "resize_shorter", None: None}
    if resize not in way:
        raise ValueError(f"recipe: resize must be 'warp' or 'shorter', got {resize!r}")
    current = "resize_warp" if base.resize_warp is not None else "resize_shorter"
    old_size = getattr(base, current)
    new_way = way[resize] or current
    new_crop = base.crop if crop is None else crop
    new_size = size if size is not None else (old_size if old_size is not None else None)
    if new_size is not None and new_size < new_crop and size is None:
        new_size = new_crop                    # a bigger crop grows the base's resize with it
    values[new_way] = new_size
    values["resize_warp" if new_way == "resize_shorter" else "resize_shorter"] = None
    values["crop"] = new_crop
    if channels is not None:
        values["channels"] = str(channels).upper()
        if values["channels"] != base.channels and mean is None and len(set(base.mean)) > 1:
            values["mean"] = base.mean[::-1] if {values["channels"], base.channels} == {"RGB", "BGR"} else base.mean
        if values["channels"] != base.channels and std is None and len(set(base.std)) > 1:
            values["std"] = base.std[::-1] if {values["channels"], base.channels} == {"RGB", "BGR"} else base.std
    for name, value in (("scale", scale), ("mean", mean), ("std", std), ("resample", resample)):
        if value is not None:
            values[name] = value
    return replace(base, **values)


def describe(recipe):
    """One line saying what a recipe does to an image."""
    resize = (f"warp to {recipe.resize_warp}x{recipe.resize_warp}" if recipe.resize_warp is not None else
              f"shorter side to {recipe.resize_shorter}" if recipe.resize_shorter is not None else "no resize")
    def values(v):
        return ", ".join(f"{x:g}" for x in v)

    return (f"{recipe.channels}, {resize} ({recipe.resample}), centre crop {recipe.crop}, "
            f"x{recipe.scale:g}, minus mean ({values(recipe.mean)}), divided by std ({values(recipe.std)})")
