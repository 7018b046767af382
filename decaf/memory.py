"""Shared activation memory for an inference forward (``Net.share_memory``).

A net keeps one array per blob, so after a forward every blob still holds its values (Caffe's
``net.blobs[name].data``). For inference only the outputs matter: a blob whose last reader has run
can lend its memory to a blob written later. This module plans that for one list of steps (the
optimized graph's plan for one set of outputs) and points the blobs at a few shared arrays:

* **Lifetimes.** Blobs that share one array (in-place layers; a Split's tops, which share its
  bottom's: the "split" role) form a group. A group lives
  from the first step that writes it to the last step that reads or writes it (``Step.bottoms``,
  ``Step.writes``, ``Step.tops``: a fused residual is a bottom, a fused activation's top a write).
* **Kept apart.** The net's inputs, the requested outputs, non-float32 blobs, groups read before
  any step writes them, and every array that is a view or has views (zero-copy concatenations,
  reshapes: ``Graph._place``) keep their own memory.
* **Assignment.** In running order, a group takes the smallest free shared array large enough (its
  values then start where the array does), else a new one; it frees it after its last step. A
  step's tops never share with its bottoms: a group is freed only after its last step, strictly.

The memory then scales with the widest point of the net, not its depth: MobileNetV2 at batch 1
27.1 -> 9.4 MB (72 blobs), at batch 16 434 -> 150 MB; MNASNet 23.0 -> 5.4 MB, EfficientNet-B0
77.3 -> 15.5 MB. Each layer then writes into memory an earlier layer used a moment ago, still in
the caches, instead of an array last touched a whole forward ago; on the 2-core Zen 4 this was
measured on, the time moved by 0.79-1.12x from run to run, within that host's noise
(docs/performance.md, tenth round), so it is a memory feature first.
"""
import numpy as np

__all__ = ["MemoryPlan"]


def _lifetimes(steps, shares):
    """{id(array): (first, last, blobs, read_first)} over the blobs of ``steps`` that own their
    array (``data.base`` None), the set of ids of those arrays that have views, and a function
    giving the array a blob's values are in (through ``shares``: id(a Split's top) -> its bottom)."""
    spans, pinned = {}, set()

    def root(array):
        while array.base is not None and isinstance(array.base, np.ndarray):
            array = array.base
        return array

    def array_of(blob):
        while id(blob) in shares:      # a Split's top shares its bottom's array (Layer.roles)
            blob = shares[id(blob)]
        return blob.data

    def see(blob, i, write):
        array = array_of(blob)
        if array.base is not None:       # a view (concatenation, reshape): its base keeps its memory
            pinned.add(id(root(array)))
            return
        key = id(array)
        first, last, blobs, read_first = spans.get(key, (None, i, [], False))
        if first is None and not write:
            read_first = True
        if first is None and write:
            first = i
        if not any(b is blob for b in blobs):
            blobs.append(blob)
        spans[key] = (first, max(last, i), blobs, read_first)

    for i, step in enumerate(steps):
        for blob in step.bottoms:
            see(blob, i, False)
        for blob in list(step.writes) + list(step.tops):
            see(blob, i, True)
    return spans, pinned, array_of


class MemoryPlan:
    """Which blobs of ``steps`` share which arrays; ``keep``: blobs whose memory stays their own
    (inputs, outputs); ``shares``: {id(a Split's top): its bottom} (``Graph._split_sources``).
    ``bind()`` points the blobs at the shared arrays, ``unbind()`` gives each its own array back
    (the same objects both ways, so kernels planned for them stay valid)."""

    def __init__(self, steps, keep, shares):
        spans, pinned, array_of = _lifetimes(steps, shares)
        kept = {id(array_of(b)) for b in keep} | pinned
        groups = [(first, last, blobs) for key, (first, last, blobs, read_first) in spans.items()
                  if key not in kept and not read_first and first is not None
                  and blobs[0].data.dtype == np.float32]
        groups.sort(key=lambda g: g[0])
        sizes, free, busy = [], [], []     # sizes of the shared arrays; free indices; (last, index)
        placed = []                        # (blobs, index of the shared array, shape, size)
        for first, last, blobs in groups:
            for entry in [e for e in busy if e[0] < first]:
                busy.remove(entry)
                free.append(entry[1])
            shape = blobs[0].data.shape
            size = int(np.prod(shape))
            fits = [j for j in free if sizes[j] >= size]
            if fits:
                j = min(fits, key=lambda j: sizes[j])
                free.remove(j)
            else:
                sizes.append(size)
                j = len(sizes) - 1
            busy.append((last, j))
            placed.append((blobs, j, shape, size))
        self.arrays = [np.empty(size, np.float32) for size in sizes]
        self._views = [(blobs, self.arrays[j][:size].reshape(shape)) for blobs, j, shape, size in placed]
        self._own = [(blob, blob.data) for blobs, _, _, _ in placed for blob in blobs]

    @property
    def shared_bytes(self):
        """Bytes of the shared arrays."""
        return sum(a.nbytes for a in self.arrays)

    @property
    def own_bytes(self):
        """Bytes the planned blobs' own arrays take (what they use without sharing)."""
        return sum(own.nbytes for own in {id(own): own for _, own in self._own}.values())

    @property
    def blob_count(self):
        return len(self._own)

    def bind(self):
        for blobs, view in self._views:
            for blob in blobs:
                blob.data = view

    def unbind(self):
        for blob, own in self._own:
            blob.data = own
