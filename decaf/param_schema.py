"""Type and range checks on layer parameters, driven by ``Layer.PARAMS``: one check for every
reader and every layer.

A spec can come from a hostile ``.decaf`` file, a prototxt, an ONNX graph or a user's JSON, so
before any layer looks at its parameters (``validate``, ``setup``) each value is checked
against what its default says it is, and against what its name means in every layer:

* by default: a ``bool`` default wants a bool (or 0/1), an ``int`` default an int, a ``float``
  default a real number, a ``str`` default a string, a ``dict`` default (a filler) a dict;
  a ``None`` or ``REQUIRED`` default says nothing, the name may;
* by name (Caffe's names, the same meaning in every layer that takes them): ``num_output``,
  ``group`` and ``local_size`` are counts (1 .. MAX_COUNT); ``kernel_size``, ``stride`` and
  ``dilation`` a count or a pair of counts; ``pad`` 0 .. MAX_COUNT, as one value, a pair or
  (top, left, bottom, right).

A value that fails raises SpecError naming the layer, the parameter, what it must be and
what it is.  Layer-specific rules (a ratio in [0, 1), pads smaller than the kernel) stay in
each layer's ``validate``.
"""
import math
import numbers
import os

from .errors import SpecError

# Far above any real net, far below what would overflow the C kernels' int32 arithmetic.
MAX_COUNT = 2**31 - 1


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _count(value):
    return _is_int(value) and 1 <= value <= MAX_COUNT


def _offset(value):
    return _is_int(value) and 0 <= value <= MAX_COUNT


def _counts(value, lengths):
    return _count(value) or (isinstance(value, (list, tuple)) and len(value) in lengths
                             and all(_count(v) for v in value))


def _offsets(value, lengths):
    return _offset(value) or (isinstance(value, (list, tuple)) and len(value) in lengths
                              and all(_offset(v) for v in value))


# name -> (test, what it must be, whether None is allowed)
BY_NAME = {
    "num_output": (_count, f"an integer in 1..{MAX_COUNT}"),
    "group": (_count, f"an integer in 1..{MAX_COUNT}"),
    "local_size": (_count, f"an integer in 1..{MAX_COUNT}"),
    "kernel_size": (lambda v: _counts(v, (2,)), f"an integer in 1..{MAX_COUNT} or a pair of them"),
    "stride": (lambda v: _counts(v, (2,)), f"an integer in 1..{MAX_COUNT} or a pair of them"),
    "dilation": (lambda v: _counts(v, (2,)), f"an integer in 1..{MAX_COUNT} or a pair of them"),
    "pad": (lambda v: _offsets(v, (2, 4)), f"an integer in 0..{MAX_COUNT}, a pair or four of them"),
}


def _real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)


def _by_default(default):
    """(test, what) for a parameter whose default is ``default``, or None if it says nothing."""
    if isinstance(default, bool):
        return (lambda v: isinstance(v, bool) or (_is_int(v) and v in (0, 1))), "true or false"
    if _is_int(default):
        return _is_int, "an integer"
    if isinstance(default, float):
        return _real, "a number"
    if isinstance(default, str):
        return (lambda v: isinstance(v, str)), "a string"
    if isinstance(default, dict):
        return (lambda v: isinstance(v, dict)), "an object"
    return None


def check_params(layer, given):
    """Check the parameters ``given`` in the spec of ``layer`` (defaults are trusted)."""
    for key in given:
        default = layer.PARAMS[key]
        value = given[key]
        rule = BY_NAME.get(key)
        if rule is not None and value is None and default is None:
            continue                      # (e.g. Pooling's kernel_size with global_pooling)
        rule = rule or _by_default(default)
        if rule is None:
            continue
        test, what = rule
        if not test(value):
            raise SpecError(f"layer {layer.name!r} ({layer.type_name}): {key} must be {what}, "
                            f"got {_short(value)}")


def _short(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---- how many parameter bytes one net may allocate ------------------------------------------
# A spec from a file can ask for any shape (num_output 2**31 over a 9216-wide input is 79 TB):
# Net charges every parameter to one budget per net before allocating it.
ENV_MAX_PARAM_BYTES = "DECAF_MAX_PARAM_BYTES"
DEFAULT_MAX_PARAM_BYTES = 16 << 30


class ParamBudget:
    """The parameter bytes one net may still allocate (``DECAF_MAX_PARAM_BYTES``, default 16 GiB)."""

    def __init__(self, net_name, max_bytes=None):
        if max_bytes is None:
            text = os.environ.get(ENV_MAX_PARAM_BYTES, "").strip()
            max_bytes = int(text) if text.isdigit() else DEFAULT_MAX_PARAM_BYTES
        self.net_name, self.max_bytes, self.spent = net_name, max_bytes, 0

    def charge(self, layer, pname, shape):
        count = 1
        for n in shape:
            count *= int(n)
        self.spent += 4 * count
        if self.spent > self.max_bytes:
            raise SpecError(
                f"net {self.net_name!r}: layer {layer.name!r} ({layer.type_name}) parameter {pname!r} of "
                f"shape {tuple(shape)} brings the net's parameters to {self.spent} bytes, over the limit "
                f"of {self.max_bytes} (raise it with {ENV_MAX_PARAM_BYTES} if the net is real)")


def charge_param(layer, pname, shape):
    """Called by Layer.add_param before it allocates: charge the net's budget, if it set one."""
    budget = getattr(layer, "param_budget", None)
    if budget is not None:
        budget.charge(layer, pname, shape)
