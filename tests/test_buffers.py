"""Steady-state forward allocates no new large buffers: every layer reuses what reshape sized."""
import tracemalloc

import numpy as np

import decaf
from decaf.models import get_spec


def peak_bytes_of_forward(net, x, outputs):
    tracemalloc.start()
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    net.forward(data=x, outputs=outputs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak - before


def test_caffenet_forward_reuses_buffers():
    net = decaf.Net(get_spec("caffenet"))
    x = np.random.default_rng(0).standard_normal((10, 3, 227, 227)).astype(np.float32)
    net.forward(data=x, outputs=["prob"])             # sizes every buffer once
    blob_bytes = sum(b.data.nbytes for b in net.blobs.values())
    peak = peak_bytes_of_forward(net, x, ["prob"])
    # the only allocations left: the returned copy of prob (40 kB) and tiny temporaries
    assert peak < 1_000_000, f"forward allocated {peak / 1e6:.1f} MB (blobs hold {blob_bytes / 1e6:.0f} MB)"


def test_batch_change_reallocates_then_settles():
    net = decaf.Net(get_spec("lenet", with_loss=False))
    small, big = np.zeros((2, 1, 28, 28), np.float32), np.zeros((64, 1, 28, 28), np.float32)
    net.forward(data=small)
    assert peak_bytes_of_forward(net, big, ["prob"]) > 1_000_000      # new batch size: new buffers
    assert peak_bytes_of_forward(net, big, ["prob"]) < 100_000        # then none
