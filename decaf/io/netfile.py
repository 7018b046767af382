"""decaf.save / decaf.load: a whole net (spec + weights + recipe) in one ``.decaf`` file.

The file is a blob file (safetensors layout, see blobfile.py). Its metadata holds:

* ``decaf.format_version``: "2" (format 1 files are read too)
* ``decaf.net``: the net spec as JSON
* ``decaf.preprocess``: the image recipe as JSON (``decaf.recipe.Recipe.to_dict``), or "null".
  Format 2 writes every key of the recipe (it added ``resize_warp``, ``layout`` and channels "L");
  format 1 recipes, which may leave keys out, are read by ``Recipe.from_dict``. Loading gives a
  ``Recipe`` in ``meta["preprocess"]``.
* ``decaf.labels``: the class names as a JSON list, or "null"
* ``decaf.source``: what the weights were converted from ({"file", "sha256", "format"}), or "null"
* ``decaf.extra``: any other JSON (e.g. solver state information), or "null"

Tensors are the net's parameters under their names (``conv1.weight``...), plus
any extra arrays passed to ``save`` under ``extra.<name>``.
"""
import hashlib
import json

import numpy as np

from .blobfile import read_blobfile, write_blobfile
from .errors import DecafFormatError
from .validate import check_net_metadata

FORMAT_VERSION = "2"
READS_VERSIONS = ("1", "2")
META_KEYS = ("preprocess", "labels", "source", "extra")


def save(net, path, preprocess=None, labels=None, source=None, extra=None, extra_arrays=None):
    """Write ``net`` (its spec and current parameters) to ``path`` atomically."""
    meta = getattr(net, "meta", {}) or {}
    values = {"preprocess": preprocess, "labels": labels, "source": source, "extra": extra}
    metadata = {"decaf.format_version": FORMAT_VERSION, "decaf.net": json.dumps(net.spec)}
    for key in META_KEYS:
        value = values[key] if values[key] is not None else meta.get(key)
        if key == "preprocess" and value is not None:
            from ..recipe import Recipe
            value = Recipe.from_dict(value).to_dict()    # a bad recipe is a ValueError here, not a bad file later
        metadata[f"decaf.{key}"] = json.dumps(value)
    arrays = {name: np.ascontiguousarray(p.data, np.float32) for name, p in net.params.items()}
    for name, value in (extra_arrays or {}).items():
        arrays[f"extra.{name}"] = np.ascontiguousarray(value)
    write_blobfile(path, arrays, metadata)


def read_netfile(path):
    """(spec, params, meta, extra_arrays) from a ``.decaf`` file, all checked."""
    arrays, metadata = read_blobfile(path)
    name = str(path)
    version = metadata.get("decaf.format_version")
    if version is None or "decaf.net" not in metadata:
        raise DecafFormatError(f"{name}: not a decaf net file (a blob file without decaf.net metadata)")
    if version not in READS_VERSIONS:
        raise DecafFormatError(f"{name}: format version {version!r} is not supported "
                               f"(this decaf reads {', '.join(map(repr, READS_VERSIONS))})")
    check_net_metadata(name, metadata)          # shapes, types and JSON depth, before anything is built
    try:
        spec = json.loads(metadata["decaf.net"])
        meta = {key: json.loads(metadata.get(f"decaf.{key}", "null")) for key in META_KEYS}
    except json.JSONDecodeError as exc:
        raise DecafFormatError(f"{name}: metadata is not valid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise DecafFormatError(f"{name}: decaf.net is not a net spec object")
    if meta["preprocess"] is not None:
        meta["preprocess"] = _recipe(meta["preprocess"], name)
    params = {k: v for k, v in arrays.items() if not k.startswith("extra.")}
    extra = {k[len("extra."):]: v for k, v in arrays.items() if k.startswith("extra.")}
    return spec, params, meta, extra


def load(path, phase="test"):
    """Build the net stored in ``path`` and load its weights. The net's ``meta``
    attribute holds the preprocessing recipe, labels and source."""
    from ..errors import ShapeError, SpecError
    from ..net import Net

    spec, params, meta, _ = read_netfile(path)
    try:
        net = Net(spec, phase=phase, init=False)
        net.load_params(params)
    except (SpecError, ShapeError, KeyError, ValueError) as exc:
        msg = exc.args[0] if exc.args else exc
        raise DecafFormatError(f"{path}: the stored net does not match its weights: {msg}") from None
    net.meta = meta
    return net


def _recipe(value, where):
    from ..recipe import Recipe
    try:
        return Recipe.from_dict(value)
    except (ValueError, TypeError) as exc:
        raise DecafFormatError(f"{where}: decaf.preprocess is not a valid recipe ({exc})") from None


def read_spec_json(path):
    """A net spec from a ``.json`` file; errors name the file (and the line and column of bad JSON)."""
    from ..errors import SpecError
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not a text (UTF-8) spec file ({exc.reason} at byte {exc.start})") from None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise SpecError(f"{path}: JSON nested too deeply") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{path}: a net spec is a JSON object ({{\"inputs\": ..., \"layers\": [...]}}), "
                        f"got a {type(spec).__name__}")
    return spec


def sha256_of(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
