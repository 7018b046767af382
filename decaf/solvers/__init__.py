"""Solvers: update a net's parameters from their gradients.

A solver sees only ``Param`` blobs (``data``, ``diff``, ``lr_mult``, ``decay_mult``, ``learnable``).
One ``step()``, after ``net.forward`` and ``net.backward`` have filled every ``diff``:

1. lr = schedule(iter)                                  (see schedules.py)
2. the trained parameters are the learnable ones with lr_mult != 0; the others (BatchNorm
   statistics, frozen layers) are not touched at all
3. optional clipping by the global L2 norm over the trained parameters' gradients:
       n = sqrt(sum_p ||diff_p||^2);  if n > clip_norm: diff_p *= clip_norm / n
4. L2 weight decay, per parameter:  g = diff + weight_decay * decay_mult * data
5. the rule of the solver with the local rate lr * lr_mult (sgd.py, adaptive.py)
6. iter += 1

``step`` leaves every ``diff`` as backward wrote it (g is computed aside). A solver may take steps
3-5 in one compiled pass (``fused_update``: SGD with float32 parameters, kernels.sgd_step).
Every solver keeps its per-parameter state (momentum, moments) in arrays of the parameter's
dtype; ``state()`` / ``load_state()`` give and take them exactly, for bit-identical resumes.
L-BFGS (lbfgs.py) is different: it minimises a full-batch objective through scipy.optimize.
"""
import numpy as np

from .schedules import Schedule, as_schedule


def collect_params(params):
    """A Net, a {name: Param} dict or a list of Params -> {name: Param}."""
    if hasattr(params, "params") and isinstance(params.params, dict):
        params = params.params
    if isinstance(params, dict):
        return dict(params)
    return {p.name: p for p in params}


class Solver:
    name = None
    SLOTS = ()      # names of the per-parameter state arrays (``slots()`` may drop some per instance)
    HYPER = ()      # names of the solver's own hyperparameters (saved with its config)

    def __init__(self, params, lr=0.01, weight_decay=0.0, clip_norm=None):
        self.params = collect_params(params)
        self.schedule = as_schedule(lr)
        self.weight_decay = float(weight_decay)
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"clip_norm must be positive, got {clip_norm}")
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.iter = 0
        self.state_arrays = {}      # param name -> {slot: array}
        self.last_grad_norm = None

    def trained(self):
        """{name: Param} of the parameters this solver updates (learnable, lr_mult != 0)."""
        return {n: p for n, p in self.params.items() if p.trained}

    def slots(self):
        """The per-parameter state arrays this solver keeps (a subset of ``SLOTS``)."""
        return self.SLOTS

    @property
    def lr(self):
        """The learning rate the next step will use."""
        return self.schedule(self.iter)

    def step(self):
        """Apply one update from the current gradients; returns the learning rate used."""
        lr = self.schedule(self.iter)
        trained = self.trained()
        scale = None
        if self.clip_norm is not None:    # the global norm costs a pass over every gradient: only when clipping
            norm = np.sqrt(sum(float(np.dot(p.diff.ravel(), p.diff.ravel())) for p in trained.values()))
            self.last_grad_norm = norm
            scale = self.clip_norm / norm if norm > self.clip_norm else None
        for name, p in trained.items():
            decay = self.weight_decay * p.decay_mult
            if name not in self.state_arrays:
                self.state_arrays[name] = {s: np.zeros_like(p.data) for s in self.slots()}
            state = self.state_arrays[name]
            if self.fused_update(p, lr * p.lr_mult, decay, 1.0 if scale is None else scale, state):
                continue
            g = p.diff
            if scale is not None:
                g = g * scale
            if decay:
                g = g + decay * p.data
            self.update(p, g, lr * p.lr_mult, state)
        self.iter += 1
        return lr

    def update(self, param, grad, lr, state):
        """Change ``param.data`` in place from ``grad`` with the local rate ``lr``."""
        raise NotImplementedError

    def fused_update(self, param, lr, decay, scale, state):
        """Steps 3-5 in one pass from ``param.diff`` (g = scale diff + decay data, then the rule),
        where the solver has a compiled kernel for them: True if done, else False (the default)."""
        return False

    # ---- configuration and state, for snapshots ---------------------------------
    def config(self):
        """The solver's type and hyperparameters as JSON-able data (``make_solver(**config)`` rebuilds it)."""
        cfg = {"type": self.name, "lr": self.schedule.to_dict(), "weight_decay": self.weight_decay,
               "clip_norm": self.clip_norm}
        cfg.update({k: getattr(self, k) for k in self.HYPER})
        return cfg

    def state(self):
        """(JSON-able info, {"slot/param": array}): everything a resume needs besides the config."""
        arrays = {f"{slot}/{name}": a for name, slots in self.state_arrays.items() for slot, a in slots.items()}
        return {"iter": self.iter}, arrays

    def load_state(self, info, arrays):
        self.iter = int(info["iter"])
        self.state_arrays = {}
        for key, value in arrays.items():
            slot, _, name = key.partition("/")
            if slot not in self.slots() or name not in self.params:
                raise ValueError(f"solver state {key!r} does not belong to this {self.name} solver and net")
            p = self.params[name]
            if tuple(value.shape) != p.shape:
                raise ValueError(f"solver state {key!r}: expected shape {p.shape}, got {tuple(value.shape)}")
            self.state_arrays.setdefault(name, {})[slot] = np.array(value, dtype=p.data.dtype)
        for name, slots in self.state_arrays.items():
            missing = [s for s in self.slots() if s not in slots]
            if missing:
                raise ValueError(f"solver state for {name!r} lacks {missing}")

    def __repr__(self):
        parts = [f"lr={self.schedule}"] + [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in self.config().items()
                                           if k not in ("type", "lr") and v not in (None, False)]
        return f"{type(self).__name__}({', '.join(parts)})"


from .adaptive import Adagrad, Adam  # noqa: E402
from .lbfgs import LBFGS  # noqa: E402
from .sgd import SGD  # noqa: E402

SOLVERS = {"sgd": SGD, "adagrad": Adagrad, "adam": Adam}


def make_solver(type, params, **kw):
    """``make_solver("sgd", net, lr=0.1, momentum=0.9)``; "nesterov" is SGD with nesterov=True."""
    if type == "nesterov":
        type, kw = "sgd", dict(kw, nesterov=True)
    if type not in SOLVERS:
        hint = " (L-BFGS is full-batch: use decaf.solvers.LBFGS)" if type == "lbfgs" else ""
        raise ValueError(f"unknown solver {type!r} (known: {', '.join(sorted(SOLVERS))}, nesterov){hint}")
    return SOLVERS[type](params, **kw)


__all__ = ["Solver", "SGD", "Adagrad", "Adam", "LBFGS", "Schedule", "SOLVERS", "make_solver", "collect_params"]
