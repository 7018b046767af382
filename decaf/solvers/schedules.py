"""Learning-rate policies: the rate at iteration ``it`` (counted from 0), as in Caffe.

    fixed      lr = base_lr
    step       lr = base_lr * gamma ^ floor(it / step)
    multistep  lr = base_lr * gamma ^ (number of steps s in ``steps`` with s <= it)
    exp        lr = base_lr * gamma ^ it
    inv        lr = base_lr * (1 + gamma * it) ^ (-power)
    poly       lr = base_lr * (1 - it / max_iter) ^ power             (0 from max_iter on)
    cosine     lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * it / max_iter)) / 2   (min_lr from max_iter on)

A ``Schedule`` is plain data (``to_dict`` / ``Schedule(**d)``) so that a snapshot can store it.
"""
import math

POLICIES = ("fixed", "step", "multistep", "exp", "inv", "poly", "cosine")
# the parameters each policy needs besides base_lr
NEEDS = {"fixed": (), "step": ("gamma", "step"), "multistep": ("gamma", "steps"), "exp": ("gamma",),
         "inv": ("gamma", "power"), "poly": ("power", "max_iter"), "cosine": ("max_iter",)}


class Schedule:
    def __init__(self, policy="fixed", base_lr=0.01, gamma=None, step=None, steps=None, power=None,
                 max_iter=None, min_lr=0.0):
        if policy not in POLICIES:
            raise ValueError(f"unknown learning-rate policy {policy!r} (known: {', '.join(POLICIES)})")
        self.policy = policy
        self.base_lr = float(base_lr)
        self.gamma = None if gamma is None else float(gamma)
        self.step = None if step is None else int(step)
        self.steps = None if steps is None else [int(s) for s in steps]
        self.power = None if power is None else float(power)
        self.max_iter = None if max_iter is None else int(max_iter)
        self.min_lr = float(min_lr)
        missing = [k for k in NEEDS[policy] if getattr(self, k) is None]
        if missing:
            raise ValueError(f"learning-rate policy {policy!r} needs {', '.join(missing)}")
        if not self.base_lr > 0 or not math.isfinite(self.base_lr):
            raise ValueError(f"the base learning rate must be a positive number, got {base_lr}")
        if self.step is not None and self.step < 1:
            raise ValueError(f"step must be at least 1, got {step}")
        if self.max_iter is not None and self.max_iter < 1:
            raise ValueError(f"max_iter must be at least 1, got {max_iter}")
        if self.steps is not None and self.steps != sorted(self.steps):
            raise ValueError(f"steps must be increasing, got {self.steps}")

    def __call__(self, it):
        p, lr = self.policy, self.base_lr
        if p == "fixed":
            return lr
        if p == "step":
            return lr * self.gamma ** (it // self.step)
        if p == "multistep":
            return lr * self.gamma ** sum(1 for s in self.steps if s <= it)
        if p == "exp":
            return lr * self.gamma ** it
        if p == "inv":
            return lr * (1.0 + self.gamma * it) ** (-self.power)
        t = min(it, self.max_iter) / self.max_iter
        if p == "poly":
            return lr * (1.0 - t) ** self.power
        return self.min_lr + (lr - self.min_lr) * (1.0 + math.cos(math.pi * t)) / 2.0   # cosine

    def to_dict(self):
        keys = ("policy", "base_lr") + NEEDS[self.policy] + (("min_lr",) if self.policy == "cosine" else ())
        return {k: getattr(self, k) for k in keys}

    def __repr__(self):
        return "Schedule(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"

    def __str__(self):
        args = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in self.to_dict().items() if k not in ("policy", "base_lr"))
        return f"{self.base_lr:g} {self.policy}" + (f" ({args})" if args else "")


def as_schedule(lr):
    """A number (fixed rate), a Schedule, or a dict of Schedule arguments -> Schedule."""
    if isinstance(lr, Schedule):
        return lr
    if isinstance(lr, dict):
        return Schedule(**lr)
    return Schedule("fixed", lr)
