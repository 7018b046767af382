"""Blob: the unit of data that flows through a net.

A blob holds a float array ``data`` and a same-shape array ``diff`` for the
gradient of the loss with respect to ``data``. ``diff`` is allocated on first
use, so a net that only runs forward never pays for it.
"""
import numpy as np


class Blob:
    def __init__(self, shape=(), dtype=np.float32, name=""):
        self.name = name
        self.dtype = np.dtype(dtype)
        self.data = np.zeros(tuple(shape), self.dtype)
        self._diff = None

    @property
    def shape(self):
        return self.data.shape

    @property
    def diff(self):
        if self._diff is None or self._diff.shape != self.data.shape:
            self._diff = np.zeros(self.data.shape, self.dtype)
        return self._diff

    @diff.setter
    def diff(self, value):
        self.diff[...] = value

    def has_diff(self):
        return self._diff is not None

    def reshape(self, shape):
        """Give the blob a new shape; reallocates only when the shape changes."""
        shape = tuple(int(s) for s in shape)
        if shape != self.data.shape:
            self.data = np.zeros(shape, self.dtype)
            self._diff = None

    def astype(self, dtype):
        """Switch the blob to another float dtype (float64 is used by gradient checks)."""
        self.dtype = np.dtype(dtype)
        self.data = self.data.astype(self.dtype)
        self._diff = None

    def __repr__(self):
        return f"Blob({self.name!r}, shape={self.shape}, dtype={self.dtype})"


class Param(Blob):
    """A learnable blob with its learning-rate and weight-decay multipliers."""

    def __init__(self, shape, name="", lr_mult=1.0, decay_mult=1.0, learnable=True):
        self.touched = 0
        super().__init__(shape, np.float32, name)
        self.lr_mult = float(lr_mult)
        self.decay_mult = float(decay_mult)
        self.learnable = learnable

    # ``data`` counts its look-ups in ``touched``: every write goes through one (``p.data[...] = v``,
    # ``p.data -= g``, ``set``), so a copy derived from the parameter (decaf/optimize.py's folded
    # weights) can tell that it may be stale and recompute itself.
    @property
    def data(self):
        self.touched += 1
        return self._data

    @data.setter
    def data(self, value):
        self.touched += 1
        self._data = value

    @property
    def trained(self):
        """Whether training changes this parameter: learnable (not a statistic such as BatchNorm's
        running mean) and not frozen (lr_mult != 0). Solvers update exactly these, and
        ``Net.set_trained_only`` runs backward only for them."""
        return self.learnable and self.lr_mult != 0

    def set(self, value):
        """Copy ``value`` into the parameter, checking its shape."""
        value = np.asarray(value)
        if value.shape != self.shape:
            raise ValueError(f"parameter {self.name}: expected shape {self.shape}, got {value.shape}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"parameter {self.name}: values contain NaN or inf")
        self.data[...] = value
