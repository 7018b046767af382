"""Finite-difference gradient checks for any layer or net.

The net is switched to float64 and the objective is f = sum(w * y) over the
net's outputs y, with fixed random weights w (a loss layer's output counts
with its loss weight instead). For every checked array (inputs and
parameters) the analytic gradient from ``Net.backward`` is compared with the
central difference (f(x + eps) - f(x - eps)) / (2 eps) at each element (or a
random sample of elements for large arrays).

An element passes when |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|).
"""
import copy
from dataclasses import dataclass

import numpy as np

from .net import Net


@dataclass
class GradResult:
    name: str
    max_abs_err: float
    max_rel_err: float
    checked: int
    passed: bool

    def line(self):
        status = "ok  " if self.passed else "FAIL"
        return f"{status} {self.name:<28} checked {self.checked:>5}  max abs {self.max_abs_err:.2e}  max rel {self.max_rel_err:.2e}"


@dataclass
class GradReport:
    results: list
    rtol: float
    atol: float
    eps: float

    @property
    def passed(self):
        return all(r.passed for r in self.results)

    def __str__(self):
        head = f"gradient check (float64 central differences, eps={self.eps:g}, rtol={self.rtol:g}, atol={self.atol:g})"
        return "\n".join([head] + [r.line() for r in self.results])


def layer_net_spec(layer_spec, input_shapes, label_classes=None):
    """Wrap one layer spec into a net whose inputs feed its bottoms."""
    bottoms = layer_spec.get("bottom") or [f"in{i}" for i in range(len(input_shapes))]
    bottoms = [bottoms] if isinstance(bottoms, str) else list(bottoms)
    spec_layer = dict(layer_spec, bottom=bottoms)
    spec_layer.setdefault("name", layer_spec.get("type", "layer").lower())
    spec_layer.setdefault("top", [spec_layer["name"]])
    inputs = {b: list(s[1:]) for b, s in zip(bottoms, input_shapes)}
    return {"name": f"check_{spec_layer['name']}", "inputs": inputs, "layers": [spec_layer]}


def check_net(net, inputs, wrt=None, eps=1e-6, rtol=1e-4, atol=1e-6, max_elements=60, seed=0, phase=None):
    """Check ``net``'s backward on ``inputs`` (a dict of arrays).

    wrt: input names to check (default: every float input not named like a label);
    every parameter with a gradient is checked too.
    """
    rng = np.random.default_rng(seed)
    if phase:
        net.set_phase(phase)
    net.astype(np.float64)
    net.force_backward = True      # (the net recomputes which layers run backward)
    inputs = {k: np.asarray(v, np.float64) for k, v in inputs.items()}
    if wrt is None:
        wrt = [k for k in inputs if "label" not in k]
    rng_states = {layer.name: copy.deepcopy(layer.rng) for layer in net.order}
    weights = {}

    def objective():
        for layer in net.order:      # same dropout masks in every evaluation
            layer.rng = copy.deepcopy(rng_states[layer.name])
        outs = net.forward(inputs)
        total = 0.0
        for name, value in outs.items():
            if name not in weights:
                weights[name] = rng.standard_normal(value.shape)
            total += float(np.sum(weights[name] * value))
        return total + net.loss()

    objective()
    non_loss = {n: weights[n] for n in net.output_names
                if not any(n in layer.top_names and layer.loss_weight for layer in net.order)}
    for n in net.output_names:
        if n not in non_loss:
            weights[n] = np.zeros_like(weights[n])
    grads = net.backward(diffs=non_loss)
    targets = [(f"input {k}", inputs[k], grads[k].copy()) for k in wrt]
    targets += [(f"param {name}", p.data, p.diff.copy()) for name, p in net.params.items() if p.learnable]
    results = []
    for name, array, analytic in targets:
        flat = array.reshape(-1)
        idx = np.arange(flat.size) if flat.size <= max_elements else rng.choice(flat.size, max_elements, False)
        abs_err = rel_err = 0.0
        ok = True
        for i in idx:
            old = flat[i]
            flat[i] = old + eps
            f_plus = objective()
            flat[i] = old - eps
            f_minus = objective()
            flat[i] = old
            numeric = (f_plus - f_minus) / (2 * eps)
            a = analytic.reshape(-1)[i]
            err = abs(a - numeric)
            scale = max(abs(a), abs(numeric))
            abs_err = max(abs_err, err)
            rel_err = max(rel_err, err / scale if scale > 0 else 0.0)
            ok &= err <= atol + rtol * scale
        results.append(GradResult(name, abs_err, rel_err, len(idx), bool(ok)))
    objective()
    return GradReport(results, rtol, atol, eps)


def check_layer(layer_spec, input_shapes, eps=1e-6, rtol=1e-4, atol=1e-6, seed=0, phase="test",
                label_classes=None, max_elements=60):
    """Check one layer: ``input_shapes`` are full shapes (with batch) of its bottoms.

    Bottoms whose name contains "label" get random integer labels in
    [0, label_classes) and are not differentiated.
    """
    spec = layer_net_spec(layer_spec, input_shapes)
    net = Net(spec, phase=phase, seed=seed, force_backward=True)
    rng = np.random.default_rng(seed + 1)
    inputs = {}
    for name, shape in zip(spec["layers"][0]["bottom"], input_shapes):
        if "label" in name:
            inputs[name] = rng.integers(0, label_classes or 2, shape).astype(np.float64)
        else:
            inputs[name] = rng.standard_normal(shape)
    return check_net(net, inputs, eps=eps, rtol=rtol, atol=atol, seed=seed, max_elements=max_elements)
