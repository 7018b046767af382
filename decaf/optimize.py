"""The graph optimizer: the forward a test-phase net runs, rewritten once at its first forward.

Every net gets it (zoo, converted, imported), unless ``Net(..., optimize=False)`` or
``DECAF_OPTIMIZE=0``. It runs only in the test phase and only when the net does not force
backward; training and gradient checks run the net as written. The passes ask the layers
(decaf/layer.py), never their type names:

1. **Identity elimination.** A layer that is y = x at inference (``identity_at_inference``:
   Dropout) is dropped; its readers read its bottom, and its top's name resolves to the bottom.
2. **Affine folding.** A layer that is a per-channel affine at inference (``affine_at_inference``
   and ``inference_affine``: BatchNorm, Scale) whose bottom is read only by it and written by a
   layer that ``absorbs_channel_affine`` (Convolution, InnerProduct) is folded into that layer:
   for s, t the affine's scale and shift, W'_k = s_k W_k and b'_k = s_k b_k + t_k, repeatedly
   (conv -> BatchNorm -> Scale is one conv). The folded layer is a new instance of the producer's
   type with those weights, writing the last affine's top; the net's own layers and parameters
   are left as they are (saving, ``param_arrays`` and training see the net as written). An
   activation the net had fused into a folded affine (BatchNorm -> ReLU) runs by itself again, as
   a copy, until pass 5 fuses it into the folded layer.
3. **Residual-add fusion.** A layer that adds its two bottoms of its top's shape (``sums_bottoms``:
   Eltwise sum, Arithmetic add) one of whose bottoms is written by a layer that can add a tensor
   as it writes (``fuse_residual``: Convolution) and read by nothing else, the other bottom being
   complete before that layer runs, is done by that layer: it writes the sum into the add's top
   (ResNet's conv -> BN -> add -> ReLU is one convolution with its epilogue). The layer is the
   folded one, or a shallow copy (``copy.copy``: the same parameters) of the net's own, so the net
   as written, which training runs, keeps its add.
4. **SiLU fusion.** x times sigmoid(x) (a layer that ``multiplies_bottoms``, one bottom written by
   a layer whose ``epilogue`` is a sigmoid, both reading the same x directly or through a Split),
   as PyTorch exports SiLU, is applied by the producer of x as one SiLU epilogue into the
   product's top, when nothing else reads x.
5. **Activation fusion.** The folded and residual-fused layers are offered the activation that
   reads their top first (``epilogue`` / ``fuse_epilogue``, as ``Net`` does for the layers as
   written): conv -> BN -> ReLU becomes one convolution whose kernel applies the ReLU as it
   writes; so does conv -> BN -> add -> ReLU, or SiLU / HardSwish / LeakyReLU / sigmoid gates.
6. **Activation outputs only.** A layer that applies the activation after it into the
   activation's own top (every tensor of an imported graph is a new blob: Conv -> Relu,
   BatchNorm -> Relu), its own top read by nothing else nor an output of the net, writes only the
   activation's top (a shallow copy, fused in place into that top): one array written instead of
   two. Its own top is then a blob the graph no longer computes.
7. **Pooling in the producer.** A global average pooling of x (``means_of_bottom``: a
   squeeze-excitation block's), read directly or through a Split, is computed by the layer that
   writes x as it writes it (``fuse_channel_means``: the depthwise convolution, each plane's mean
   while the plane is in the cache, the same floats as the pooling kernel), when x is the last blob
   that layer writes.
8. **Dead-layer elimination.** A layer none of whose outputs is read any more, nor an output of
   the net, is dropped (a net as written has none: every unread blob is an output; the passes
   above can leave some).
9. **Zero-copy concatenation.** A layer whose top is its bottoms side by side (``bottom_slices``:
   Concat) gets bottoms that are views of its top, so that their producers write into it, when
   each bottom has one producer and no other reader and the views are contiguous (along the
   channels: at batch 1). It copies as usual at other batch sizes. DenseNet's chains (each
   Concat's inputs, through Splits, a prefix of the block's last Concat's) share the last one's
   top: the others' tops are prefix views of it and every feature map a slice. At a larger batch
   a prefix of channels is not contiguous: the feature maps keep their arrays and each is copied
   into the last top once, by the first Concat of the chain that has it (the copies grow with the
   block's depth, not its square), when every reader of the Concats' tops takes images apart
   (``reads_images_apart``: BatchNorm and Scale, DenseNet's readers).

10. **Views instead of copies.** A layer whose top is some of its bottom's values in another shape
   (``view_of_bottom``: Reshape, Flatten, a Slice of contiguous values, e.g. a range of channels at
   batch 1) gets a top that is a view of its bottom (or of the blob a Split shares with it), when
   nothing works in place on either, here or in the net as written, the bottom has one writer and
   is no input, and the top no concatenation's in-place bottom. ShuffleNetV2's channel shuffle
   (Reshape, Transpose, Reshape, then two channel Slices) then copies once, in the Transpose.

A folded layer's weights are derived from the net's parameters. Every write into a parameter
goes through ``Param.data`` (``Param.touched`` counts the look-ups), so before each forward the
folded layers whose sources were looked up since they were folded recompute their weights
(``load_params``, a solver step, ``p.data[...] = ...``; not a write through an array reference
kept from before the fold).

With ``Net.share_memory()`` the blobs whose values are not asked for share a few arrays
(decaf/memory.py); the optimized forward then leaves only the inputs and the requested outputs in
their blobs.

Blob names stay valid: ``forward(outputs=[name])`` for a blob the optimized graph no longer
computes (a convolution's output before its folded BatchNorm) runs the net as written for that
call. ``backward`` after an optimized forward (test phase) first reruns that forward as written,
so that every layer has the state its backward reads.
"""
import copy
import os

import numpy as np

from .layer import Layer, create_layer
from .memory import MemoryPlan

__all__ = ["Graph", "Step", "enabled_by_default", "fold_channel_affines"]


def enabled_by_default():
    """The default of ``Net(optimize=None)``: on, unless ``DECAF_OPTIMIZE`` is 0, false, no or off."""
    return os.environ.get("DECAF_OPTIMIZE", "1").strip().lower() not in ("0", "false", "no", "off")


def fold_channel_affines(weight, bias, affines, out_weight=None):
    """(W', b') for a layer y_k = W_k x + b_k followed by per-channel affines y -> s y + t, applied in
    order: W'_k = S_k W_k, b'_k = S_k b_k + T_k (S, T the composition, in float64). ``bias`` None is
    0. W' is computed in W's dtype (one rounding), into ``out_weight`` when given."""
    k = weight.shape[0]
    scale, shift = np.ones(k), np.zeros(k)
    for s, t in affines:
        s, t = np.broadcast_to(np.asarray(s, np.float64), (k,)), np.broadcast_to(np.asarray(t, np.float64), (k,))
        scale, shift = scale * s, shift * s + t
    b = np.zeros(k) if bias is None else np.asarray(bias, np.float64)
    if out_weight is None:
        out_weight = np.empty_like(weight)
    np.multiply(weight.reshape(k, -1), scale.astype(weight.dtype)[:, None], out=out_weight.reshape(k, -1))
    return out_weight, scale * b + shift


class Step:
    """One layer's forward with its blobs fixed. ``fused``: the layer before applies it (nothing to
    run); ``writes``: the blobs it fills (its tops and a fused activation's); ``optimized``: a step
    of the optimized graph, which calls ``Layer.infer`` (the net as written calls ``forward``)."""
    __slots__ = ("layer", "bottoms", "tops", "writes", "fused", "optimized")

    def __init__(self, layer, bottoms, tops, fused=False):
        self.layer, self.bottoms, self.tops, self.fused = layer, list(bottoms), list(tops), fused
        self.writes = list(tops)
        self.optimized = False

    def __call__(self):
        if not self.fused:
            if self.optimized:
                self.layer.infer(self.bottoms, self.tops)
            else:
                self.layer.forward(self.bottoms, self.tops)

    def __repr__(self):
        return f"Step({self.layer!r}{', fused' if self.fused else ''})"


class _ConcatInPlace(Step):
    """A concatenation whose bottoms are views of its top (``views``, set by ``Graph._place``): their
    producers wrote into it, nothing is left to copy. Copies as usual when a bottom is not its view
    (another batch size: the blobs were reallocated)."""
    __slots__ = ("views",)

    def __init__(self, step):
        super().__init__(step.layer, step.bottoms, step.tops)
        self.views = None

    def __call__(self):
        views, top = self.views, self.tops[0].data
        root = top if top.base is None else top.base        # (a view's base is the array owning the memory)
        if views is None or any(b.data is not v or v.base is not root for b, v in zip(self.bottoms, views)):
            self.layer.forward(self.bottoms, self.tops)


class _ConcatChain(Step):
    """A concatenation of a chain (``Graph._concat_chains``: DenseNet's, each one's inputs a prefix of
    the last one's): its top is a view of the last one's top. At batch 1 its inputs are views of
    slices of it too, so nothing is copied. At a larger batch a prefix of channels is no contiguous
    array, so the feature maps keep their own arrays and each concatenation copies in only those
    the one before it in the chain did not (``copies``: (bottom, view of the last top) pairs), when
    every reader of its top takes images apart (``Layer.reads_images_apart``). ``placed``: the
    (blob, array) pairs ``Graph._place`` set, checked before skipping; copies as usual when they
    are not in place (another batch size)."""
    __slots__ = ("owner", "placed", "copies", "after")

    def __init__(self, step, owner=None):
        super().__init__(step.layer, step.bottoms, step.tops)
        self.owner = owner          # the chain's last (largest) concatenation; None: this is it
        self.placed = None
        self.copies = None
        self.after = []             # the chain's concatenations before this one (run first: ``plan``)

    def __call__(self):
        placed = self.placed
        if placed is None or any(blob.data is not array for blob, array in placed):
            self.layer.forward(self.bottoms, self.tops)
        elif self.copies:
            for blob, view in self.copies:
                np.copyto(view, blob.data)


class _ViewStep(Step):
    """A layer whose top is a view of its bottom's values (``Layer.view_of_bottom``: Reshape,
    Flatten, a Slice of contiguous values), made so by ``Graph._place``: nothing to copy.
    ``source``: the blob whose array the view is of (the bottom, or the Split's bottom it shares);
    ``placed``: (the view, the source's array), checked before skipping. Copies as usual when the
    top is not that view (a Slice across images at a larger batch, reallocated blobs)."""
    __slots__ = ("source", "placed")

    def __init__(self, step, source):
        super().__init__(step.layer, step.bottoms, step.tops)
        self.source = source
        self.placed = None

    def __call__(self):
        placed = self.placed
        if placed is None or self.tops[0].data is not placed[0] or self.source.data is not placed[1]:
            super().__call__()


class _Folded:
    """A producer with the affines after it folded in: the new layer and what it was made from."""

    def __init__(self, source, step):
        self.source, self.step, self.affines, self.layer, self.seen = source, step, [], None, None

    def sources(self):
        return [p for layer in [self.source] + self.affines for p in layer.blobs]

    def _touched(self):
        """The sources' look-ups so far: counters only grow, so an equal sum means none changed."""
        return sum(p.touched for p in self.params)

    def refold(self):
        """Recompute the folded weight and bias from the sources' current values."""
        params = {p.name[len(self.layer.name) + 1:]: p for p in self.layer.blobs}
        src = {p.name[len(self.source.name) + 1:]: p.data for p in self.source.blobs}

        def getter(layer):
            values = {p.name[len(layer.name) + 1:]: p.data for p in layer.blobs}
            return lambda pname: np.asarray(values[pname], np.float64)

        affines = [type(a).inference_affine(a.p, getter(a)) for a in self.affines]
        weight = params["weight"]
        if weight.data.dtype != src["weight"].dtype:
            for p in self.layer.blobs:
                p.astype(src["weight"].dtype)
        _, b = fold_channel_affines(src["weight"], src.get("bias"), affines, out_weight=weight.data)
        params["bias"].data[...] = b
        self.params = self.sources()
        self.seen = self._touched()

    def stale(self):
        return self._touched() != self.seen


class Graph:
    """The optimized forward of ``net`` in the test phase (see the module docstring).

    ``steps``: what a full forward runs; ``actions``: what the passes did, as (kind, layer names,
    into) with kind "folded", "residual", "silu", "fused", "direct" (an activation's output only),
    "pooled" (a global average pooling done by the depthwise convolution before),
    "identity", "dead" or "concat" (written in place);
    ``alias``: removed layers' top names
    -> the Blob holding their values; ``missing``: blob names the graph no longer computes."""

    def __init__(self, net):
        self.net = net
        self.actions = []
        self.alias = {}
        self.folded = []
        self.copies = []            # (layer, step): shallow copies of the net's layers the passes changed
        steps = [Step(layer, net.bottoms[layer.name], net.tops[layer.name], fused=layer.fused)
                 for layer in net.order]
        producer = {id(t): s for s in steps for t in s.tops if not s.fused}
        for step in steps:          # an activation the net fused into a new blob: its producer writes it
            if step.fused and step.tops[0] is not step.bottoms[0] and id(step.bottoms[0]) in producer:
                producer[id(step.bottoms[0])].writes.append(step.tops[0])
        steps = self._remove_identities(steps)
        steps = self._fold_affines(steps)
        steps = self._fuse_residuals(steps)
        steps = self._fuse_silus(steps)
        self._fuse_folded(steps)
        self._write_activations_only(steps)
        self._pool_in_producer(steps)
        self.steps = self._views(self._concat_chains(self._concat_in_place(self._remove_dead(steps))))
        for step in self.steps:
            step.optimized = True
        written = {id(b) for s in self.steps for b in s.writes}
        written |= {id(net.blobs[n]) for n in net.input_shapes}
        self.missing = {name for name, blob in net.blobs.items()
                        if id(blob) not in written and name not in self.alias}
        for group in self.folded:
            group.refold()
        self._place()
        self._plans = {}
        self._memory = {}           # plan key -> MemoryPlan (Net.share_memory)
        self._shared = None         # the MemoryPlan whose arrays the blobs point at now

    @staticmethod
    def applies_to(net):
        """False for a net with a layer working in place on an input blob (rerunning a forward as
        written, for backward or for a blob the graph does not compute, would apply it twice)."""
        inputs = {id(net.blobs[n]) for n in net.input_shapes}
        return not any(id(t) in inputs for layer in net.order for t in net.tops[layer.name])

    # ---- passes -------------------------------------------------------------------------------
    def _remove_identities(self, steps):
        kept = []
        rewire = {}                     # id(removed top) -> the blob to read instead
        for step in steps:
            step.bottoms = [rewire.get(id(b), b) for b in step.bottoms]
            layer = step.layer
            if (len(step.bottoms) == 1 and len(step.tops) == 1 and layer.identity_at_inference()
                    and step.tops[0].shape == step.bottoms[0].shape):
                top, bottom = step.tops[0], step.bottoms[0]
                written_in_place = any(top in s.tops and top in s.bottoms for s in steps if s is not step)
                if top is bottom or not written_in_place:
                    if top is not bottom:
                        rewire[id(top)] = bottom
                        self.alias[top.name] = bottom
                        for name, blob in list(self.alias.items()):    # an alias of an alias
                            if blob is top:
                                self.alias[name] = bottom
                    self.actions.append(("identity", [layer.name], None))
                    continue
            kept.append(step)
        return kept

    def _fold_affines(self, steps):
        aliased = {id(b) for b in self.alias.values()}
        groups = {}                     # id(step) -> _Folded
        removed = set()
        readers_of = {}                 # id(blob) -> steps reading it (folding changes no step's bottoms)
        for step in steps:
            for b in {id(b) for b in step.bottoms}:
                readers_of.setdefault(b, []).append(step)
        for step in steps:
            layer = step.layer
            if not layer.absorbs_channel_affine or len(step.tops) != 1 or step.fused:
                continue
            while True:
                top = step.tops[0]
                readers = [s for s in readers_of.get(id(top), []) if id(s) not in removed]
                if len(readers) != 1 or id(top) in aliased or top.name in self.net.output_names:
                    break
                affine = readers[0]
                a = affine.layer
                if (len(affine.bottoms) != 1 or len(affine.tops) != 1 or affine.tops[0] is top
                        or not type(a).affine_at_inference(a.p) or affine.tops[0].shape != top.shape):
                    break
                group = groups.get(id(step))
                if group is None:
                    group = groups[id(step)] = _Folded(layer, step)
                    self.folded.append(group)
                group.affines.append(a)
                step.tops = step.writes = [affine.tops[0]]
                removed.add(id(affine))
                for reader in readers_of.get(id(affine.tops[0]), []):
                    if reader.fused:        # an activation the affine applied: it runs again (see _unfuse)
                        self._unfuse(reader)
        for group in self.folded:
            group.layer = self._derive(group)
            group.step.layer = group.layer
            self.actions.append(("folded", [a.name for a in group.affines], group.source.name))
        return [s for s in steps if id(s) not in removed]

    def _unfuse(self, step):
        """Run ``step`` (an activation the net fused into a layer that is folded away) by itself
        again, as a shallow copy whose ``fused`` is off; activation fusion may then fuse it into the
        folded layer."""
        layer = copy.copy(step.layer)
        layer.fused = False
        self.copies.append((layer, step))
        step.layer, step.fused = layer, False

    def _derive(self, group):
        """A new layer of the producer's type, with a bias, writing the last affine's top."""
        source, step = group.source, group.step
        spec = dict(source.p, name=source.name, type=source.type_name, bottom=list(source.bottom_names),
                    top=[step.tops[0].name], bias_term=True)
        layer = create_layer(spec)
        layer.setup([b.shape for b in step.bottoms], None)      # zeros: refold fills them
        layer.phase, layer.rng = "test", source.rng
        self._reshape(layer, step)
        return layer

    @staticmethod
    def _reshape(layer, step):
        shapes = layer.reshape([b.shape for b in step.bottoms])
        if [tuple(s) for s in shapes] != [t.shape for t in step.tops]:
            raise AssertionError(f"folded layer {layer.name!r}: output {shapes} != {[t.shape for t in step.tops]}")

    def _fuse_residuals(self, steps):
        """Adds of two tensors done by the producer of one of them (see the module docstring)."""
        aliased = {id(b) for b in self.alias.values()}
        inputs = {id(self.net.blobs[n]) for n in self.net.input_shapes}
        own = {id(g.step): g.layer for g in self.folded}       # steps already running a layer of ours
        removed = set()
        for i, add in enumerate(steps):
            if not add.layer.sums_bottoms() or len(add.bottoms) != 2 or len(add.tops) != 1 or add.fused:
                continue
            top = add.tops[0]
            if any(b is top or b.shape != top.shape for b in add.bottoms) or add.bottoms[0] is add.bottoms[1]:
                continue
            position = {id(s): j for j, s in enumerate(steps)}

            def writers(blob):
                return [s for s in steps if id(s) not in removed and not s.fused and any(b is blob for b in s.writes)]

            def readers(blob):
                return [s for s in steps if id(s) not in removed and any(b is blob for b in s.bottoms)]

            candidates = []                 # (producer, its output, the other operand), the later producer first
            for mine, other in (add.bottoms, add.bottoms[::-1]):
                w = writers(mine)
                if len(w) == 1 and w[0].tops == [mine] and w[0].writes == [mine] and position[id(w[0])] < i:
                    candidates.append((position[id(w[0])], w[0], mine, other))
            for _, producer, mine, other in sorted(candidates, key=lambda c: -c[0]):
                if (readers(mine) != [add] or id(mine) in aliased or id(mine) in inputs
                        or mine.name in self.net.output_names
                        or not all(position[id(w)] < position[id(producer)] for w in writers(other))):
                    continue
                fresh = id(producer) not in own
                layer = own[id(producer)] if not fresh else copy.copy(producer.layer)
                if not layer.fuse_residual(other):
                    continue
                if fresh:
                    own[id(producer)] = layer
                    self.copies.append((layer, producer))
                producer.layer = layer
                producer.tops = producer.writes = [top]
                producer.bottoms = producer.bottoms + [other]    # read too: kept, computed before it
                removed.add(id(add))
                self.actions.append(("residual", [add.layer.name], layer.name))
                break
        return [s for s in steps if id(s) not in removed]

    def _own_layer(self, step):
        """The layer of ``step`` the passes may change: the folded one, or a new shallow copy of the
        net's (recorded in ``copies``; the step runs it from now on)."""
        for group in self.folded:
            if group.step is step:
                return group.layer
        for layer, s in self.copies:
            if s is step:
                return layer
        layer = copy.copy(step.layer)
        self.copies.append((layer, step))
        step.layer = layer
        return layer

    def _fuse_silus(self, steps):
        """x * sigmoid(x) done by the producer of x (see the module docstring)."""
        from .layer import Epilogue
        removed, gated = set(), set()
        for mul in steps:
            if not mul.layer.multiplies_bottoms() or len(mul.bottoms) != 2 or len(mul.tops) != 1 or mul.fused:
                continue
            top = mul.tops[0]
            if any(b is top or b.shape != top.shape for b in mul.bottoms):
                continue
            live = [s for s in steps if id(s) not in removed]
            for u, gate in (mul.bottoms, mul.bottoms[::-1]):
                sig = [s for s in live if not s.fused and any(b is gate for b in s.writes)]
                if len(sig) != 1 or sig[0].tops != [gate] or len(sig[0].bottoms) != 1:
                    continue
                sig = sig[0]
                ep = sig.layer.epilogue()
                if ep is None or ep.kind != "sigmoid" or [s for s in live if gate in s.bottoms] != [mul]:
                    continue
                x = self._same_source(live, u, sig.bottoms[0])
                if x is None:
                    continue
                source, splits = x
                writers = [s for s in live if not s.fused and any(b is source for b in s.writes)]
                if len(writers) != 1 or writers[0].tops != [source] or id(writers[0]) in gated:
                    continue
                producer = writers[0]
                blobs = {id(source)} | {id(t) for s in splits for t in s.tops}
                readers = [s for s in live if any(id(b) in blobs for b in s.bottoms)]
                if source.name in self.net.output_names or any(s not in splits + [sig, mul] for s in readers):
                    continue
                layer = self._own_layer(producer)
                if not layer.fuse_epilogue(Epilogue("silu", alpha=1.0), False, top):
                    continue
                producer.writes = producer.writes + [top]
                removed.update({id(sig), id(mul)})
                gated.add(id(producer))
                self.actions.append(("silu", [sig.layer.name, mul.layer.name], layer.name))
                break
        self._gated = gated
        return [s for s in steps if id(s) not in removed]

    @staticmethod
    def _same_source(steps, a, b):
        """(x, the Split steps between) when blobs a and b hold the same x: equal, or tops of
        Splits (layers with the "split" role, whose tops share their bottom's data) of x."""
        def root(blob):
            for s in steps:
                if "split" in s.layer.roles and any(t is blob for t in s.tops) and len(s.bottoms) == 1:
                    return s.bottoms[0], s
            return blob, None
        (ra, sa), (rb, sb) = root(a), root(b)
        if ra is not rb:
            return None
        return ra, [s for s in {id(s): s for s in (sa, sb) if s is not None}.values()]

    def _fuse_folded(self, steps):
        """Offer each folded or residual-fused layer the activation that reads its top first (as Net
        does)."""
        position = {id(s): i for i, s in enumerate(steps)}
        changed = [(g.layer, g.step, g.source.name) for g in self.folded]
        changed += [(layer, step, layer.name) for layer, step in self.copies]
        for layer, step, source_name in changed:
            if id(step) in self._gated:          # (its epilogue is the SiLU already)
                continue
            top = step.tops[0]
            reader = next((s for s in steps[position[id(step)] + 1:] if any(b is top for b in s.bottoms)), None)
            if reader is None or reader.fused or len(reader.tops) != 1:
                continue
            epilogue = reader.layer.epilogue()
            if epilogue is None:
                continue
            act_top = reader.tops[0]
            in_place = act_top is top
            if layer.fuse_epilogue(epilogue, in_place, None if in_place else act_top):
                reader.fused = True
                if not in_place:
                    step.writes = step.writes + [act_top]
                self.actions.append(("fused", [reader.layer.name], source_name))

    def _write_activations_only(self, steps):
        """A layer applying the activation after it into that activation's own top (an imported
        graph's Conv -> Relu, BatchNorm -> Relu), its own top read by nothing else, writes only the
        activation's top: one array written instead of two (see the module docstring)."""
        aliased = {id(b) for b in self.alias.values()}
        inputs = {id(self.net.blobs[n]) for n in self.net.input_shapes}
        for act in steps:
            if not act.fused or len(act.bottoms) != 1 or len(act.tops) != 1 or act.tops[0] is act.bottoms[0]:
                continue
            top, out = act.bottoms[0], act.tops[0]
            producers = [s for s in steps if not s.fused and len(s.tops) == 1 and s.tops[0] is top]
            if (len(producers) != 1 or producers[0].writes != [top, out] or id(producers[0]) in self._gated
                    or top.name in self.net.output_names or id(top) in aliased or id(top) in inputs
                    or any(b is top for s in steps if s is not act for b in s.bottoms)):
                continue
            producer = producers[0]
            layer = self._own_layer(producer)
            if layer.fuse_epilogue(act.layer.epilogue(), True, None):
                producer.tops = producer.writes = [out]
                self.actions.append(("direct", [act.layer.name], layer.name))

    def _pool_in_producer(self, steps):
        """A global average pooling of x (``means_of_bottom``: a squeeze-excitation block's), read
        directly or through a Split, computed by the layer that writes x, as it writes x
        (``fuse_channel_means``: the depthwise convolution), when x is the last blob that layer
        writes (after its fused activation). The pooling's step is then fused (skipped)."""
        split_source = self._split_sources(steps)
        for pool in steps:
            if pool.fused or len(pool.bottoms) != 1 or len(pool.tops) != 1 or not pool.layer.means_of_bottom():
                continue
            x = split_source.get(id(pool.bottoms[0]), pool.bottoms[0])
            writers = [s for s in steps if not s.fused and any(b is x for b in s.writes)]
            if len(writers) != 1 or writers[0].writes[-1] is not x or pool.tops[0] is x:
                continue
            producer = writers[0]
            if not self._own_layer(producer).fuse_channel_means(pool.tops[0]):
                continue
            pool.fused = True
            producer.writes = producer.writes + [pool.tops[0]]
            self.actions.append(("pooled", [pool.layer.name], producer.layer.name))

    def _remove_dead(self, steps):
        wanted = {id(self.blob(n)) for n in self.net.output_names}
        kept = []
        for step in reversed(steps):
            if any(id(b) in wanted for b in step.writes):
                kept.append(step)
                wanted.update(id(b) for b in step.bottoms)
            else:
                self.actions.append(("dead", [step.layer.name], None))
        return kept[::-1]

    @staticmethod
    def _writers_readers(steps):
        """({id(blob): the steps writing it, fused activations left out}, {id(blob): the steps
        reading it, each once})."""
        writers, readers = {}, {}
        for step in steps:
            if not step.fused:
                for b in step.writes:
                    writers.setdefault(id(b), []).append(step)
            for b in {id(b): b for b in step.bottoms}:
                readers.setdefault(b, []).append(step)
        return writers, readers

    @staticmethod
    def _split_sources(steps):
        """{id(a Split's top): the Split's bottom, whose array the top shares}."""
        return {id(t): s.bottoms[0] for s in steps if "split" in s.layer.roles for t in s.tops}

    def _concat_in_place(self, steps):
        """Concatenations (``bottom_slices``) whose bottoms can be views of the top: each bottom is
        written by one producer (not an input, not a Split's shared top), read by nothing but the
        concatenation (and layers working in place before it), and nothing works in place on the
        top. Whether the views are contiguous (batch 1 for channels) is decided by ``_place``."""
        inputs = {id(self.net.blobs[n]) for n in self.net.input_shapes}
        writers, readers = self._writers_readers(steps)

        def in_place(step, blob):
            return any(t is blob for t in step.tops) and any(b is blob for b in step.bottoms)

        def placeable(step, blob):
            producers = [w for w in writers.get(id(blob), []) if not in_place(w, blob)]
            return (id(blob) not in inputs and len(producers) == 1 and "split" not in producers[0].layer.roles
                    and all(r is step or in_place(r, blob) for r in readers[id(blob)]))

        out = []
        for step in steps:
            top = step.tops[0] if len(step.tops) == 1 else None
            if (top is not None and step.layer.bottom_slices() is not None
                    and len({id(b) for b in step.bottoms}) == len(step.bottoms)
                    and not any(in_place(w, top) for w in writers.get(id(top), []) + readers.get(id(top), []))
                    and all(placeable(step, b) for b in step.bottoms)):
                step = _ConcatInPlace(step)
                self.actions.append(("concat", [step.layer.name], None))
            out.append(step)
        return out

    def _concat_chains(self, steps):
        """Chains of concatenations whose inputs, seen through Splits, are the same feature maps in
        the same order, each chain member's a prefix of the last one's (DenseNet: layer k concatenates
        the block's input and the k - 1 maps before it). The last one's top holds them all; each
        member's top becomes a prefix view of it and each feature map a slice of it (``_place``), so
        their producers write into it and no concatenation copies. Each feature map must have one
        producer, not an input, read by nothing but the chain's concatenations (directly or through a
        Split read only by them), and nothing may work in place on a member's top."""
        inputs = {id(self.net.blobs[n]) for n in self.net.input_shapes}
        writers, readers = self._writers_readers(steps)
        split_source = self._split_sources(steps)
        concats = [s for s in steps if type(s) is Step and not s.fused and len(s.tops) == 1
                   and s.layer.bottom_slices() is not None]
        roots = {id(s): [split_source.get(id(b), b) for b in s.bottoms] for s in concats}
        chains = []
        taken = set()
        for last in sorted(concats, key=lambda s: -len(s.bottoms)):
            if id(last) in taken:
                continue
            ids = [id(r) for r in roots[id(last)]]
            members = [s for s in concats if id(s) not in taken and s is not last
                       and [id(r) for r in roots[id(s)]] == ids[:len(s.bottoms)]]
            if members and len(set(ids)) == len(ids):
                chains.append((last, members))
                taken.update(id(s) for s in members + [last])
        replace = {}
        for last, members in chains:
            chain = {id(s) for s in members + [last]}

            def only_chain(blob):
                return all(id(r) in chain or ("split" in r.layer.roles
                                              and all(id(q) in chain for t in r.tops for q in readers.get(id(t), [])))
                           for r in readers.get(id(blob), []))

            def feature_ok(blob):
                producers = writers.get(id(blob), [])
                return (id(blob) not in inputs and len(producers) == 1 and "split" not in producers[0].layer.roles
                        and not any(b is blob for b in producers[0].bottoms) and only_chain(blob))

            def top_ok(step):
                top = step.tops[0]
                return (writers.get(id(top)) == [step]
                        and not any(any(t is top for t in r.tops) for r in readers.get(id(top), [])))

            if all(feature_ok(r) for r in roots[id(last)]) and all(top_ok(s) for s in members + [last]):
                replace[id(last)] = _ConcatChain(last)
                for s in members:
                    replace[id(s)] = _ConcatChain(s, replace[id(last)])
                ordered = [replace[id(s)] for s in steps if id(s) in chain]
                for i, s in enumerate(ordered):
                    s.after = ordered[:i]
                self.actions.append(("concat", [s.layer.name for s in members + [last]], None))
        self._chain_roots = {id(replace[id(last)]): roots[id(last)] for last, _ in chains if id(last) in replace}
        return [replace.get(id(s), s) for s in steps]

    def _views(self, steps):
        """Layers whose top can be a view of their bottom (``view_of_bottom``: Reshape, Flatten,
        Slice) become ``_ViewStep``s when sharing the memory cannot change what anything reads:
        the bottom (or, through a Split, the blob it shares) is written by one layer, not in
        place, and is no input; nothing works in place on it, on the bottom or on the top, in the
        optimized graph or the net as written (training runs the latter on the same blobs); the
        top has no other writer and is no concatenation's in-place bottom. Whether the view exists
        (contiguous values) is decided by ``_place`` at each batch size."""
        net = self.net
        inputs = {id(net.blobs[n]) for n in net.input_shapes}
        aliased = {id(b) for b in self.alias.values()}
        writers, _ = self._writers_readers(steps)
        in_place = {id(t) for step in steps if not step.fused for t in step.tops
                    if any(t is b for b in step.bottoms)}
        in_place |= {id(t) for layer in net.order for t in net.tops[layer.name]
                     if any(t is b for b in net.bottoms[layer.name])}
        split_source = self._split_sources(steps)
        placed = {id(b) for s in steps if isinstance(s, (_ConcatInPlace, _ConcatChain)) for b in s.bottoms}
        placed |= {id(r) for roots in self._chain_roots.values() for r in roots}
        out = []
        for step in steps:
            layer = step.layer
            if (type(step) is Step and not step.fused and len(step.bottoms) == 1 and len(step.tops) == 1
                    and type(layer).view_of_bottom is not Layer.view_of_bottom):
                bottom, top = step.bottoms[0], step.tops[0]
                source = split_source.get(id(bottom), bottom)
                producers = writers.get(id(source), [])
                if (len(producers) == 1 and "split" not in producers[0].layer.roles
                        and not ({id(source), id(bottom), id(top)} & (in_place | inputs | aliased))
                        and writers.get(id(top)) == [step] and id(top) not in placed and top is not bottom):
                    step = _ViewStep(step, source)
                    self.actions.append(("view", [layer.name], None))
            out.append(step)
        return out

    def _place(self):
        """Make the bottoms of each in-place concatenation views of its top, where every view is
        contiguous (the kernels write contiguous arrays); a later concatenation first, since an
        earlier one's top may be one of its bottoms."""
        for step in reversed(self.steps):
            if not isinstance(step, _ConcatInPlace):
                continue
            top = step.tops[0].data
            views = [top[index] for index in step.layer.bottom_slices()]
            if all(v.flags.c_contiguous and v.shape == b.shape for b, v in zip(step.bottoms, views)):
                for b, v in zip(step.bottoms, views):
                    b.data = v
                step.views = views
            else:
                step.views = None
        for step in self.steps:                 # the chains: the last concatenation's top holds them all
            if not isinstance(step, _ConcatChain) or step.owner is not None:
                continue
            members = [s for s in self.steps if isinstance(s, _ConcatChain) and s.owner is step]
            top = step.tops[0].data
            slices = step.layer.bottom_slices()
            roots = self._chain_roots[id(step)]
            views = [top[index] for index in slices]
            prefixes = []
            for m in members:
                end = slices[len(m.bottoms) - 1]
                prefixes.append(top[end[:-1] + (slice(0, end[-1].stop),)])
            shaped = (all(v.shape == r.shape for r, v in zip(roots, views))
                      and all(p.shape == m.tops[0].shape for m, p in zip(members, prefixes)))
            contiguous = (all(v.flags.c_contiguous for v in views)
                          and all(p.flags.c_contiguous for p in prefixes))
            for s in members + [step]:
                s.placed = s.copies = None
            if shaped and contiguous:
                for r, v in zip(roots, views):
                    r.data = v
                for m, p in zip(members, prefixes):
                    m.tops[0].data = p
                for s in members + [step]:   # through a Split, a bottom's array is its feature map's view
                    s.placed = [(s.tops[0], s.tops[0].data)] + [(b, v) for b, v in zip(s.bottoms, views)]
            elif shaped and all(self._reads_images_apart(m.tops[0]) for m in members):
                # (a larger batch) the members' tops are prefixes of the last top with the images
                # apart; the feature maps keep their arrays, each copied in by the first
                # concatenation of the chain (in running order) that has it
                for m, p in zip(members, prefixes):
                    m.tops[0].data = p
                for s in [s for s in self.steps if s is step or s in members]:
                    done = max([len(a.bottoms) for a in s.after], default=0)
                    s.copies = [(b, views[i]) for i, b in enumerate(s.bottoms) if i >= done]
                    s.placed = [(s.tops[0], s.tops[0].data)]
        for step in self.steps:                 # tops that are views of their bottoms, in order
            if isinstance(step, _ViewStep):
                top = step.tops[0]
                view = step.layer.view_of_bottom(step.source.data, top.shape)
                if view is not None and view.shape == top.shape:
                    top.data = view
                    step.placed = (view, step.source.data)
                else:
                    step.placed = None

    def _reads_images_apart(self, blob):
        """Whether every layer reading ``blob`` (in the optimized graph and in the net as written,
        which training runs on the same blobs) takes it with its images apart
        (``Layer.reads_images_apart``), so that it can be a prefix of a wider tensor's channels."""
        readers = [s.layer for s in self.steps if not s.fused and any(b is blob for b in s.bottoms)]
        readers += [layer for layer in self.net.order if any(b is blob for b in self.net.bottoms[layer.name])]
        return bool(readers) and all(layer.reads_images_apart() for layer in readers)

    # ---- running --------------------------------------------------------------------------------
    def blob(self, name):
        """The Blob holding blob ``name``'s values after an optimized forward."""
        return self.alias.get(name) or self.net.blobs[name]

    def plan(self, outputs=None):
        """The steps computing ``outputs`` (all when None), or None when one of them is a blob the
        graph does not compute (the caller then runs the net as written)."""
        key = None if outputs is None else tuple(outputs)
        if key not in self._plans:
            if outputs is None:
                self._plans[key] = list(self.steps)
            elif any(n in self.missing for n in outputs):
                self._plans[key] = None
            else:
                wanted = {id(self.blob(n)) for n in outputs}
                chosen = []
                for step in reversed(self.steps):
                    if any(id(b) in wanted for b in step.writes):
                        chosen.append(step)
                        wanted.update(id(b) for b in step.bottoms)
                        # (a chain's concatenation copies in what the ones before it did not)
                        wanted.update(id(a.tops[0]) for a in getattr(step, "after", ()))
                self._plans[key] = chosen[::-1]
        return self._plans[key]

    def share_memory(self, outputs, keep):
        """Point the blobs of the plan for ``outputs`` at shared arrays (decaf/memory.py), all but
        ``keep`` (Blobs: the inputs and the requested outputs); planned once per set of outputs."""
        key = None if outputs is None else tuple(outputs)
        plan = self._memory.get(key)
        if plan is not None and plan is self._shared:
            return plan
        self.own_memory()
        if plan is None:
            steps = self.plan(outputs)
            plan = self._memory[key] = MemoryPlan(steps, keep, self._split_sources(steps))
        plan.bind()
        self._shared = plan
        return plan

    def own_memory(self):
        """Give every blob its own array back (before the net runs as written, or resizes)."""
        if self._shared is not None:
            self._shared.unbind()
            self._shared = None

    def forget_memory(self):
        """Own arrays back and the memory plans dropped (the blobs are about to be resized)."""
        self.own_memory()
        self._memory = {}

    def reshape(self):
        """After the net's blobs were resized (a new batch size): resize the folded layers."""
        for group in self.folded:
            self._reshape(group.layer, group.step)
        for layer, step in self.copies:
            self._reshape(layer, step)
        self._place()

    def refresh(self):
        """Refold the folded layers whose parameters may have been written since their fold."""
        for group in self.folded:
            if group.stale():
                group.refold()

    # ---- what happened ----------------------------------------------------------------------------
    def summary(self):
        """One line per kind of rewrite, for ``decaf profile`` and ``Net.describe``."""
        words = {"folded": "folded into the layer before",
                 "residual": "adds done by the convolution before (residual fused)",
                 "silu": "sigmoid gates times their input done by the convolution before (SiLU)",
                 "fused": "fused into the layer before",
                 "direct": "written by the layer before straight into their own top (the values before "
                           "them not kept)",
                 "pooled": "global average poolings computed by the depthwise convolution before, as it "
                           "writes each plane",
                 "identity": "removed (identity at inference)", "dead": "removed (output not read)",
                 "concat": "concatenations written in place by their producers (no copy at batch 1; "
                           "each map copied once at larger batches in DenseNet's chains)",
                 "view": "reshapes and slices whose top is a view of their bottom (no copy)"}
        lines = []
        for kind, text in words.items():
            done = [(names, into) for k, names, into in self.actions if k == kind]
            if done:
                items = [f"{'+'.join(names)} -> {into}" if into else "+".join(names) for names, into in done]
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                lines.append(f"{len(done)} {text}: {shown}")
        return lines
