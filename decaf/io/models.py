"""The one entry point for models: what a MODEL argument may be, and which reader takes a file.

    load_model()                          # the pretrained default (EfficientNet-Lite0)
    load_model("efficientnet_lite2")      # a pretrained name: converted once into the cache
    load_model("model.decaf")             # decaf's own file: spec, weights, recipe, labels
    load_model("model.onnx")              # a foreign file readable on its own: converted in memory
    load_model("caffenet", zoo=True)      # a zoo spec with random weights (profiling, training)

``read_foreign(path, arch=, prototxt=)`` is the extension table every converter is chosen from
(``decaf convert`` and ``load_model`` both use it). Every command resolves its MODEL argument here,
so each accepts the same forms and says the same thing about a bad one.
"""
import os

from .errors import DecafFormatError

__all__ = ["load_model", "read_foreign", "FOREIGN_EXTENSIONS"]

# extension -> format name; the readers are imported when used (onnx is an optional dependency)
FOREIGN_EXTENSIONS = {".pth": "torch", ".pt": "torch", ".ckpt": "torch", ".bin": "torch",
                      ".onnx": "onnx", ".caffemodel": "caffe", ".prototxt": "caffe"}


def read_foreign(src, arch=None, prototxt=None):
    """(spec, arrays, format name, carried) from another framework's file, chosen by its extension.

    carried: {"labels", "preprocess"} the file itself holds (ONNX metadata written by decaf export,
    a Caffe synset_words.txt), None where it holds none."""
    src = os.fspath(src)
    ext = os.path.splitext(src)[1].lower()
    if not os.path.exists(src):
        raise FileNotFoundError(f"{src}: no such file")
    fmt = FOREIGN_EXTENSIONS.get(ext)
    carried = {"labels": None, "preprocess": None}
    if fmt == "torch":
        if not arch:
            from .torch_convert import known_archs
            raise ValueError(f"{src}: a PyTorch checkpoint holds no architecture: pass --arch "
                             f"(one of {known_archs()})")
        from .torch_convert import torch_to_net
        spec, arrays = torch_to_net(src, arch)
        return spec, arrays, fmt, carried
    if fmt == "onnx":
        from .onnx_convert import onnx_to_net
        from .onnx_meta import read_onnx_metadata
        spec, arrays = onnx_to_net(src)
        return spec, arrays, fmt, read_onnx_metadata(src)
    if fmt == "caffe":
        from .caffe import caffe_to_net
        if ext == ".prototxt":
            spec, arrays, labels = caffe_to_net(src, None)
        else:
            if not prototxt:
                raise ValueError("a .caffemodel needs its net definition: pass --prototxt deploy.prototxt")
            spec, arrays, labels = caffe_to_net(prototxt, src)
        carried["labels"] = labels
        return spec, arrays, fmt, carried
    raise ValueError(f"{src}: unknown source format {ext!r} (expected .decaf, or .pth/.pt, .onnx or "
                     ".caffemodel to convert)")


def load_model(model=None, zoo=False, seed=0):
    """A ``Net`` (with ``net.meta``: recipe, labels, source) for a MODEL argument.

    ``model``: None (the pretrained default), a pretrained name, a ``.decaf`` path, an ``.onnx``
    path (converted in memory, keeping the labels and recipe it carries), or, with ``zoo=True``, a
    zoo spec name (random weights from ``seed``). Anything else is an error naming what was given
    and what is accepted: a folder, a missing file, a checkpoint that needs ``decaf convert``."""
    from .. import pretrained
    if model is None:
        return pretrained.load_pretrained(pretrained.DEFAULT_MODEL)
    text = os.fspath(model)
    if text in pretrained.PRETRAINED:
        return pretrained.load_pretrained(text)
    if zoo:
        from ..models import ZOO
        if text in ZOO:
            from ..net import Net
            net = Net(ZOO[text](), seed=seed)
            net.meta = {"preprocess": None, "labels": None, "source": {"zoo": text, "seed": seed}}
            return net
    if os.path.isdir(text):
        raise IsADirectoryError(f"{text}: is a directory, not a model file (give a .decaf file or a name)")
    ext = os.path.splitext(text)[1].lower()
    looks_like_path = ext in FOREIGN_EXTENSIONS or ext == ".decaf" or os.sep in text or os.path.exists(text)
    if not looks_like_path:
        names = sorted(pretrained.PRETRAINED)
        if zoo:
            from ..models import ZOO
            raise KeyError(f"{text!r} is not a pretrained network ({', '.join(names)}), a zoo spec "
                           f"({', '.join(sorted(ZOO))}) or a model file")
        raise KeyError(f"{text!r} is neither a pretrained network ({', '.join(names)}) nor a model file "
                       "(.decaf, or .onnx)")
    if not os.path.exists(text):
        raise FileNotFoundError(f"{text}: no such file")
    if ext == ".onnx":
        return _converted(text)
    if ext in FOREIGN_EXTENSIONS:
        raise ValueError(f"{text}: a {FOREIGN_EXTENSIONS[ext]} file needs more than the file to be read "
                         f"(its architecture or net definition): convert it once with "
                         f"`decaf convert {text} ... -o model.decaf`")
    from .netfile import load
    return load(text)


def _converted(path):
    """An ONNX file as a net, converted in memory with the labels and recipe it carries."""
    from ..net import Net
    spec, arrays, _, carried = read_foreign(path)
    try:
        net = Net.from_arrays(spec, arrays)
    except (ValueError, KeyError) as exc:
        raise DecafFormatError(f"{path}: the converted net is not valid: {exc}") from None
    net.meta = {"preprocess": carried.get("preprocess"), "labels": carried.get("labels"),
                "source": {"format": "onnx", "file": os.path.basename(path)}}
    return net
