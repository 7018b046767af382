"""The one check of a ``.decaf`` file's metadata before anything is built from it.

``decaf.load`` turns JSON strings from the file into a net spec, a recipe and labels, then
builds a Net. A hostile or broken file can put anything there: JSON nested ten thousand
deep, a spec whose ``inputs`` is a number, a layer that is a string, shapes in the
trillions, labels that are not strings. Each of those raised a TypeError, AttributeError,
RecursionError or MemoryError somewhere deep; here they are found first, with resource
limits, and raised as one DecafFormatError naming the file and the field.

The values of layer parameters are checked by the layers' own schema when the Net is built
(decaf/param_schema.py), and the total parameter bytes by the Net's budget.
"""
import json
import math

from .errors import DecafFormatError

__all__ = ["check_net_metadata", "MAX_JSON_DEPTH", "MAX_LAYERS", "MAX_INPUT_ELEMENTS"]

MAX_JSON_DEPTH = 64              # real specs nest 4 deep
MAX_LAYERS = 100_000
MAX_NAME_CHARS = 4096
MAX_INPUT_ELEMENTS = 1 << 31    # elements of one example of one input
_JSON_KEYS = ("net", "preprocess", "labels", "source", "extra")


def check_net_metadata(name, metadata):
    """Raise DecafFormatError unless ``metadata`` (the file's str -> str dict) holds a
    well-formed net spec and well-formed preprocess/labels/source/extra JSON."""
    values = {key: _parse(name, f"decaf.{key}", metadata.get(f"decaf.{key}", "null")) for key in _JSON_KEYS}
    _check_spec(name, values["net"])
    labels = values["labels"]
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise DecafFormatError(f"{name}: decaf.labels must be a list of strings or null")
    if values["preprocess"] is not None and not isinstance(values["preprocess"], dict):
        raise DecafFormatError(f"{name}: decaf.preprocess must be an object or null")
    if values["source"] is not None and not isinstance(values["source"], dict):
        raise DecafFormatError(f"{name}: decaf.source must be an object or null")


def _parse(name, key, text):
    depth = _depth(text)
    if depth > MAX_JSON_DEPTH:
        raise DecafFormatError(f"{name}: {key} nests {depth} levels deep (limit {MAX_JSON_DEPTH})")
    try:
        return json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:     # (JSONDecodeError is a ValueError)
        raise DecafFormatError(f"{name}: {key} is not valid JSON ({exc})") from None


def _depth(text):
    """The bracket nesting of JSON text, outside strings: measured before json.loads recurses."""
    deepest = depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _no_constants(constant):
    raise ValueError(f"{constant} is not allowed")


def _check_spec(name, spec):
    def bad(message):
        return DecafFormatError(f"{name}: decaf.net: {message}")

    if not isinstance(spec, dict):
        raise bad("is not a net spec object")
    if "name" in spec and not isinstance(spec["name"], str):
        raise bad("name must be a string")
    inputs = spec.get("inputs")
    if not isinstance(inputs, dict) or not inputs:
        raise bad("inputs must be an object of blob name -> per-example shape")
    for blob, shape in inputs.items():
        if not isinstance(shape, list) or not all(_is_int(n) and n >= 1 for n in shape):
            raise bad(f"input {_short(blob)}: shape must be a list of positive integers, got {_short(shape)}")
        if math.prod(shape) > MAX_INPUT_ELEMENTS:
            raise bad(f"input {_short(blob)}: shape {shape} has more than {MAX_INPUT_ELEMENTS} elements")
    layers = spec.get("layers", [])
    if not isinstance(layers, list):
        raise bad("layers must be a list")
    if len(layers) > MAX_LAYERS:
        raise bad(f"{len(layers)} layers (limit {MAX_LAYERS})")
    for index, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise bad(f"layer {index} is not an object")
        for key in ("name", "type"):
            if not isinstance(layer.get(key), str) or not 0 < len(layer[key]) <= MAX_NAME_CHARS:
                raise bad(f"layer {index}: {key} must be a non-empty string, got {_short(layer.get(key))}")
        for key in ("bottom", "top"):
            value = layer.get(key, [])
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise bad(f"layer {layer['name']!r}: {key} must be a blob name or a list of them")
        for key in ("lr_mult", "decay_mult"):
            value = layer.get(key)
            values = value if isinstance(value, list) else [value]
            if value is not None and not all(_is_number(v) for v in values):
                raise bad(f"layer {layer['name']!r}: {key} must be a number or a list of numbers")
        if "loss_weight" in layer and not _is_number(layer["loss_weight"]):
            raise bad(f"layer {layer['name']!r}: loss_weight must be a number")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
