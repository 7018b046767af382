"""decaf's metadata in ONNX files: class names and the preprocessing recipe as ``metadata_props``.

``decaf export`` writes, beside the graph, string entries (JSON values, as in ``.decaf`` files):

* ``decaf.labels``: the class names, a JSON list of strings
* ``decaf.preprocess``: the recipe (``decaf.recipe.Recipe.to_dict``)
* ``decaf.source``: what the weights were converted from, if known

``decaf convert model.onnx`` reads them back (``read_onnx_metadata``), so a net that goes
decaf -> ONNX -> decaf keeps its labels and recipe. Other tools ignore unknown metadata_props.
Entries are checked like a ``.decaf`` file's (JSON depth, types, a valid recipe).
"""
import json

from .errors import DecafFormatError
from .validate import _parse

KEYS = ("labels", "preprocess", "source")


def metadata_entries(net):
    """{key: JSON text} for the net's ``meta`` values that are set."""
    meta = getattr(net, "meta", None) or {}
    out = {}
    for key in KEYS:
        value = meta.get(key)
        if value is None:
            continue
        if key == "preprocess":
            from ..recipe import Recipe
            value = Recipe.from_dict(value).to_dict()
        out[f"decaf.{key}"] = json.dumps(value)
    return out


def add_metadata(model, net):
    """Set the net's labels / recipe / source as metadata_props of the ONNX ``model`` (in place)."""
    entries = metadata_entries(net)
    keep = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.add(key=p.key, value=p.value)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    return model


def read_onnx_metadata(path):
    """{"labels": list or None, "preprocess": Recipe or None, "source": dict or None} from an ONNX file."""
    import onnx
    from ..recipe import Recipe
    name = str(path)
    try:
        model = onnx.load(name, load_external_data=False)
    except Exception as exc:      # (onnx_to_net reports unreadable files first; this is a second read)
        raise DecafFormatError(f"{name}: not a readable ONNX model: {exc}") from exc
    props = {p.key: p.value for p in model.metadata_props}
    out = {key: _parse(name, f"decaf.{key}", props.get(f"decaf.{key}", "null")) for key in KEYS}
    labels = out["labels"]
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise DecafFormatError(f"{name}: metadata decaf.labels must be a list of strings")
    if out["source"] is not None and not isinstance(out["source"], dict):
        raise DecafFormatError(f"{name}: metadata decaf.source must be an object")
    if out["preprocess"] is not None:
        try:
            out["preprocess"] = Recipe.from_dict(out["preprocess"])
        except (ValueError, TypeError) as exc:
            raise DecafFormatError(f"{name}: metadata decaf.preprocess is not a valid recipe ({exc})") from None
    return out
