"""Net: a DAG of layers joined by named blobs.

A net spec is plain data::

    {"name": "tiny",
     "inputs": {"data": [3, 32, 32], "label": []},     # per-example shapes
     "layers": [{"name": "ip", "type": "InnerProduct", "bottom": "data",
                 "top": "ip", "num_output": 10}, ...]}

Build time does all the checking: unknown types and parameters, missing
bottoms, two layers writing one blob, cycles, and every shape (at batch 1).
Layers run in a topological order (spec order breaks ties). A layer whose top
equals its bottom runs in place. A blob read by several layers gets an
automatic Split layer so that gradients from every reader are summed.
"""
import heapq

import numpy as np

from . import fillers, kernels  # noqa: F401  (layers use fillers)
from .blob import Blob
from .errors import ShapeError, SpecError
from .exclusive import exclusive
from .layer import create_layer
from .optimize import Graph, Step, enabled_by_default
from .param_schema import ParamBudget

PHASES = ("train", "test")


class Net:
    def __init__(self, spec, phase="test", seed=0, force_backward=False, init=True, optimize=None):
        """``init=False`` skips the weight fillers (zeros), for nets whose weights are loaded next.
        ``optimize``: run the graph optimizer's forward in the test phase (decaf/optimize.py);
        None: on unless ``DECAF_OPTIMIZE=0``."""
        import decaf.layers  # noqa: F401  (registers every layer type)

        self.spec = spec
        self.name = spec.get("name", "net")
        inputs = spec.get("inputs")
        if not isinstance(inputs, dict) or not inputs:
            raise SpecError(f"net {self.name!r}: spec needs 'inputs', a dict of blob name -> per-example shape")
        self.input_shapes = {k: tuple(int(d) for d in v) for k, v in inputs.items()}
        for k, shape in self.input_shapes.items():
            if min(shape, default=1) < 1:
                raise SpecError(f"net {self.name!r}: input {k!r} has shape {list(shape)}; every size must be >= 1")
        self._force_backward = bool(force_backward)
        layers = [create_layer(s) for s in spec.get("layers", [])]
        names = [layer.name for layer in layers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SpecError(f"net {self.name!r}: duplicate layer name(s) {dupes}")
        self._wire(layers)
        self.layers = {layer.name: layer for layer in self.order}
        self.batch_size = None
        self._plans = {}
        self.set_phase(phase)
        rng = np.random.default_rng(seed)
        for layer in self.order:
            layer.rng = np.random.default_rng(rng.integers(2**63))
        self._setup(rng if init else None)
        self.params = {p.name: p for layer in self.order for p in layer.blobs}
        self.trained_only = False
        self._find_grad_needs()
        self._fuse_epilogues()
        self._graph = None             # the optimized forward, built at the first one that uses it
        self._rerun = None             # outputs of the last forward if it ran optimized (see backward)
        self._share_memory = False     # see share_memory
        self.optimize = enabled_by_default() if optimize is None else optimize

    @classmethod
    def from_arrays(cls, spec, arrays, phase="test", seed=0, force_backward=False, optimize=None):
        """The net of ``spec`` with its parameters copied from ``arrays`` (name -> array): every
        parameter must be given, with its shape (``load_params``). The fillers do not run."""
        net = cls(spec, phase=phase, seed=seed, force_backward=force_backward, init=False, optimize=optimize)
        net.load_params(arrays)
        return net

    # ---- building -------------------------------------------------------------
    def _wire(self, layers):
        """Resolve blob names into blob keys, insert Split layers, order the layers."""
        producer = {name: None for name in self.input_shapes}   # blob name -> producing layer
        for layer in layers:
            for top in layer.top_names:
                if top in layer.bottom_names:
                    if not layer.inplace_ok:
                        raise SpecError(f"layer {layer.name!r} ({layer.type_name}) cannot run in place "
                                        f"(top {top!r} is also its bottom)")
                    continue
                if top in producer:
                    who = "an input" if producer[top] is None else f"layer {producer[top].name!r}"
                    raise SpecError(f"blob {top!r} is written by both {who} and layer {layer.name!r}")
                producer[top] = layer
        for layer in layers:
            for b in layer.bottom_names:
                if b not in producer:
                    raise SpecError(f"layer {layer.name!r}: bottom blob {b!r} is not produced by any layer "
                                    f"or input (inputs: {sorted(self.input_shapes)})")

        # In-place layers on a name form a chain in spec order; a reader sees the
        # version written by the last in-place layer before it in the spec.
        writers = {}   # name -> [in-place layers in spec order]
        position = {layer.name: i for i, layer in enumerate(layers)}
        for layer in layers:
            for top in layer.top_names:
                if top in layer.bottom_names:
                    writers.setdefault(top, []).append(layer)
        deps = {layer.name: set() for layer in layers}
        readers = {}   # (name, version) -> [layers reading it, not in place]
        for layer in layers:
            for b in layer.bottom_names:
                chain = writers.get(b, [])
                inplace = b in layer.top_names
                before = [w for w in chain if position[w.name] < position[layer.name]]
                version = len(before)
                if version:
                    deps[layer.name].add(before[-1].name)
                elif producer[b] is not None:
                    deps[layer.name].add(producer[b].name)
                if not inplace:
                    readers.setdefault((b, version), []).append(layer)
        for (b, version), who in readers.items():
            chain = writers.get(b, [])
            if version < len(chain):
                raise SpecError(f"layer {chain[version].name!r} works in place on blob {b!r}, which layer "
                                f"{who[0].name!r} also reads before it: give {chain[version].name!r} a new top name")
        self.order = self._toposort(layers, deps, position)
        self._insert_splits(readers)

    def _toposort(self, layers, deps, position):
        by_name = {layer.name: layer for layer in layers}
        users = {name: [] for name in by_name}
        missing = {name: len(d) for name, d in deps.items()}
        for name, d in deps.items():
            for dep in d:
                users[dep].append(name)
        ready = [(position[n], n) for n, count in missing.items() if count == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            _, name = heapq.heappop(ready)
            order.append(by_name[name])
            for user in users[name]:
                missing[user] -= 1
                if missing[user] == 0:
                    heapq.heappush(ready, (position[user], user))
        if len(order) != len(layers):
            stuck = sorted(n for n, count in missing.items() if count > 0)
            raise SpecError(f"net {self.name!r} has a cycle through layers {stuck}")
        return order

    def _insert_splits(self, readers):
        """Give every layer its bottom/top Blob objects; split blobs read more than once."""
        from .layers.shape import Split

        self.blobs = {name: Blob(name=name) for name in self.input_shapes}
        for layer in self.order:
            for top in layer.top_names:
                if top not in self.blobs:
                    self.blobs[top] = Blob(name=top)
        self.bottoms = {layer.name: [self.blobs[b] for b in layer.bottom_names] for layer in self.order}
        self.tops = {layer.name: [self.blobs[t] for t in layer.top_names] for layer in self.order}
        new_order = list(self.order)
        for (b, _), who in readers.items():
            if len(who) < 2:
                continue
            split = Split({"name": f"{b}_split", "type": "Split", "bottom": [b],
                           "top": [f"{b}_split_{i}" for i in range(len(who))]})
            tops = [Blob(name=t) for t in split.top_names]
            for reader, blob in zip(who, tops):
                # replace one occurrence per reader entry (a layer may read b twice)
                slots = self.bottoms[reader.name]
                slot = next(i for i, x in enumerate(slots) if x is self.blobs[b])
                slots[slot] = blob
            first = min(new_order.index(r) for r in who)
            new_order.insert(first, split)
            self.bottoms[split.name] = [self.blobs[b]]
            self.tops[split.name] = tops
        self.order = new_order
        consumed = {id(x) for layer in self.order for x in self.bottoms[layer.name]}
        self.output_names = [name for name, blob in self.blobs.items()
                             if id(blob) not in consumed and name not in self.input_shapes]

    def _fuse_epilogues(self):
        """Offer each layer the activation that reads its top first (``epilogue()``: ReLU, ReLU6,
        ...); a layer that takes it (``fuse_epilogue``) applies it as it writes its output, one pass
        instead of two, in place or into the activation's own top. The activation layer stays in the
        net with ``fused`` set: its forward does nothing and its backward is unchanged (it reads its
        top, the same either way)."""
        for i, layer in enumerate(self.order):
            top = self.tops[layer.name][0] if self.tops[layer.name] else None
            reader = next((r for r in self.order[i + 1:] if any(b is top for b in self.bottoms[r.name])), None)
            epilogue = reader.epilogue() if reader is not None else None
            if epilogue is None:
                continue
            act_top = self.tops[reader.name][0]
            in_place = act_top is top
            if layer.fuse_epilogue(epilogue, in_place, None if in_place else act_top):
                reader.fused = True

    def _setup(self, rng):
        budget = ParamBudget(self.name)     # total parameter bytes, charged before each allocation
        for name, shape in self.input_shapes.items():
            self.blobs[name].reshape((1,) + shape)
        for layer in self.order:     # parameters need their bottom's shape, so setup walks in order
            layer.param_budget = budget
            layer.setup([b.shape for b in self.bottoms[layer.name]], rng)
            self._reshape_layer(layer)
        self.batch_size = 1

    def _find_grad_needs(self):
        """Which layers run backward: those with a parameter that wants a gradient (every
        learnable one; with ``trained_only`` only ``Param.trained`` ones) or with a bottom that
        needs one. Fixes the per-layer calls ``backward_steps`` makes."""
        def wants_grad(p):
            return p.trained if self.trained_only else p.learnable

        needs = {id(self.blobs[n]): self.force_backward for n in self.input_shapes}
        self.needs_backward = {}
        for layer in self.order:
            bottoms = self.bottoms[layer.name]
            need = any(needs.get(id(b), False) for b in bottoms) or any(wants_grad(p) for p in layer.blobs)
            self.needs_backward[layer.name] = need
            for t in self.tops[layer.name]:
                needs[id(t)] = need or needs.get(id(t), False)
        self._blob_needs_grad = needs
        self._backward_steps = [
            (layer, _BackwardStep(layer, self.tops[layer.name],
                                  [needs.get(id(b), False) for b in self.bottoms[layer.name]],
                                  self.bottoms[layer.name]))
            for layer in reversed(self.order) if self.needs_backward[layer.name]]

    @property
    def force_backward(self):
        """Whether backward also fills the input blobs' diffs (gradient checks, saliency)."""
        return self._force_backward

    @force_backward.setter
    def force_backward(self, value):
        self._force_backward = bool(value)
        self._find_grad_needs()

    def set_trained_only(self, trained_only=True):
        """With ``trained_only``, backward fills only the diffs of trained parameters
        (``Param.trained``: learnable, lr_mult != 0) and skips every layer below which nothing
        is trained (a frozen feature extractor costs no backward). The default (False) fills
        every learnable parameter's diff, frozen or not, which gradient checks want."""
        self.trained_only = bool(trained_only)
        self._find_grad_needs()
        return self

    # ---- the optimized forward --------------------------------------------------
    @property
    def optimize(self):
        """Whether forward in the test phase runs the optimized graph (decaf/optimize.py)."""
        return self._optimize

    @optimize.setter
    def optimize(self, value):
        self._optimize = bool(value)

    def share_memory(self, on=True):
        """Let the optimized forward (test phase) keep only what it returns: the blobs of values
        not asked for share a few arrays, each layer writing into memory an earlier one has
        finished with (decaf/memory.py: the activations' memory then scales with the widest point
        of the net, not its depth; MobileNetV2 at batch 16 434 -> 150 MB). After such a forward
        only the inputs and the requested outputs (``outputs``, or the net's outputs) hold their
        values; another blob's ``data`` holds some later layer's. Off by default (every blob keeps
        its values, as in Caffe). Training, ``backward`` and the net as written always run with
        every blob's own array. Returns the net."""
        self._share_memory = bool(on)
        if not self._share_memory:
            self._own_memory()
        return self

    def _own_memory(self):
        """Every blob its own array again (before anything but the optimized forward runs)."""
        graph = getattr(self, "_graph", None)
        if graph is not None:
            graph.own_memory()

    def _shared_for(self, graph, outputs):
        """With share_memory on, point the blobs of the plan for ``outputs`` at shared arrays."""
        if self._share_memory:
            names = self.output_names if outputs is None else outputs
            keep = [self.blobs[n] for n in self.input_shapes] + [graph.blob(n) for n in names]
            graph.share_memory(outputs, keep)

    def optimized_graph(self):
        """The optimized forward (``decaf.optimize.Graph``) when forward uses it now (test phase,
        ``optimize`` on, no ``force_backward``), else None."""
        if not (self._optimize and self.phase == "test" and not self._force_backward):
            return None
        if self._graph is None:
            if not Graph.applies_to(self):
                return None
            self._graph = Graph(self)
        return self._graph

    def forward_steps(self, outputs=None):
        """[Step]: the per-layer calls ``forward`` makes for ``outputs`` (all: None), in order;
        ``step()`` runs one (``decaf profile`` times each)."""
        graph = self.optimized_graph()
        steps = graph.plan(outputs) if graph is not None else None
        if steps is not None:
            graph.refresh()
            self._shared_for(graph, outputs)
            return steps
        self._own_memory()
        return self._written_steps(outputs)

    def output_blob(self, name):
        """The Blob holding blob ``name``'s values once the steps of ``forward_steps`` have run (in
        the optimized graph a removed identity's top is read from its bottom)."""
        graph = self.optimized_graph()
        return graph.blob(name) if graph is not None else self.blobs[name]

    def _written_steps(self, outputs):
        """The steps of the net as written (no optimization). Every layer's forward is called, a
        fused activation's too: it knows it is fused and does nothing (wrappers see every layer)."""
        return [Step(layer, self.bottoms[layer.name], self.tops[layer.name])
                for layer in self.plan(outputs)]

    # ---- running --------------------------------------------------------------
    def set_phase(self, phase):
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        self.phase = phase
        self._own_memory()
        for layer in self.order:
            layer.phase = phase

    def reshape(self, batch_size):
        """Size every blob for a batch of ``batch_size`` examples."""
        if self._graph is not None:
            self._graph.forget_memory()     # (the blobs' own arrays back before they are resized)
        for name, shape in self.input_shapes.items():
            self.blobs[name].reshape((batch_size,) + shape)
        for layer in self.order:
            self._reshape_layer(layer)
        if self._graph is not None:
            self._graph.reshape()
        self.batch_size = batch_size

    def _reshape_layer(self, layer):
        bottoms, tops = self.bottoms[layer.name], self.tops[layer.name]
        shapes = layer.reshape([b.shape for b in bottoms])
        for blob, shape in zip(tops, shapes):
            if any(blob is b for b in bottoms) and tuple(shape) != blob.shape:
                raise ShapeError(f"layer {layer.name!r} runs in place but changes the shape of "
                                 f"{blob.name!r} from {blob.shape} to {tuple(shape)}")
            blob.reshape(shape)

    def plan(self, outputs=None):
        """The layers needed to compute ``outputs`` (all layers when None), in order."""
        key = None if outputs is None else tuple(outputs)
        if key not in self._plans:
            if outputs is None:
                self._plans[key] = list(self.order)
            else:
                for name in outputs:
                    if name not in self.blobs:
                        raise KeyError(f"net {self.name!r} has no blob {name!r} (blobs: {list(self.blobs)})")
                wanted = {id(self.blobs[n]) for n in outputs}
                chosen = []
                for layer in reversed(self.order):
                    if any(id(t) in wanted for t in self.tops[layer.name]):
                        chosen.append(layer)
                        wanted.update(id(b) for b in self.bottoms[layer.name])
                self._plans[key] = chosen[::-1]
        return self._plans[key]

    def set_inputs(self, inputs, needed=None):
        """Check and copy input arrays into the input blobs; reshape for a new batch size."""
        unknown = set(inputs) - set(self.input_shapes)
        if unknown:
            raise KeyError(f"net {self.name!r} has no input(s) {sorted(unknown)} (inputs: {sorted(self.input_shapes)})")
        needed = self.input_shapes if needed is None else needed
        missing = [n for n in needed if n not in inputs]
        if missing:
            raise KeyError(f"net {self.name!r}: input(s) {missing} not given")
        batch = None
        arrays = {}
        for name, value in inputs.items():
            array = np.asarray(value)
            want = self.input_shapes[name]
            if array.shape[1:] != want:
                raise ShapeError(f"input {name!r}: expected shape (N{''.join(f', {d}' for d in want)}), "
                                 f"got {array.shape}")
            if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
                raise TypeError(f"input {name!r}: expected a numeric array, got dtype {array.dtype}")
            # a contiguous float32 input into a float32 blob is checked for NaN/inf while it is
            # copied, on all threads; any other floating input is checked here, before the copy
            fast = array.dtype == np.float32 and array.flags.c_contiguous and self.blobs[name].data.dtype == np.float32
            if not fast and np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
                raise ValueError(f"input {name!r} contains NaN or inf")
            if batch is not None and array.shape[0] != batch:
                raise ShapeError(f"inputs disagree on the batch size: {name!r} has {array.shape[0]}, expected {batch}")
            batch = array.shape[0]
            arrays[name] = array, fast
        if batch is None or batch == 0:
            raise ShapeError(f"net {self.name!r}: empty batch")
        if batch != self.batch_size:
            self.reshape(batch)
        for name, (array, fast) in arrays.items():
            data = self.blobs[name].data
            if fast:   # (the blob is refilled on the next call anyway, so a refused input may stay in it)
                if kernels.copy_count_nonfinite(array.reshape(-1), data.reshape(-1)):
                    raise ValueError(f"input {name!r} contains NaN or inf")
            else:
                with np.errstate(over="ignore"):      # an overflow is refused just below, by name
                    data[...] = array
                # finite float64 (or int) values can still be beyond float32's range: inf after the cast
                if data.dtype != array.dtype and np.issubdtype(data.dtype, np.floating) \
                        and not np.all(np.isfinite(data)):
                    raise ValueError(f"input {name!r} has values beyond the range of {data.dtype} "
                                     f"(largest magnitude {float(np.max(np.abs(array))):.3g})")

    def forward(self, inputs=None, outputs=None, **kw):
        """Run the net; return {name: copy of the blob} for ``outputs``.

        ``outputs`` defaults to the net's output blobs; only the layers needed
        for the requested blobs run. One thread at a time (decaf/exclusive.py).
        """
        with exclusive(self, "forward"):
            inputs, outputs = self._forward_args(inputs, outputs)
            inputs = dict(inputs or {}, **kw)
            graph = self.optimized_graph()
            plan = graph.plan(outputs) if graph is not None else None
            optimized = plan is not None
            if not optimized:
                plan = self._written_steps(outputs)
            needed = [n for n in self.input_shapes if any(
                self.blobs[n] in step.bottoms for step in plan)] if outputs is not None else None
            if inputs:
                self.set_inputs(inputs, needed)
            if optimized:
                graph.refresh()
                self._shared_for(graph, outputs)
            else:
                self._own_memory()
            self._rerun = None
            for step in plan:
                step()
            self._rerun = (outputs,) if optimized else None
            names = self.output_names if outputs is None else outputs
            blob = graph.blob if optimized else self.blobs.__getitem__
            return {n: blob(n).data.copy() for n in names}

    def loss(self):
        """The weighted sum of the loss layers' outputs from the last forward."""
        return float(sum(layer.loss_weight * float(np.sum(self.tops[layer.name][0].data))
                         for layer in self.order if layer.loss_weight))

    def seed_diffs(self, diffs=None):
        """The start of ``backward``: zero the output blobs' diffs, put each loss layer's
        loss_weight into its top's diff, then copy ``diffs`` (blob name -> gradient) in."""
        for name in self.output_names:
            blob = self.blobs[name]
            blob.diff[...] = 0
        for layer in self.order:
            if layer.loss_weight:
                self.tops[layer.name][0].diff[...] = layer.loss_weight
        for name, value in (diffs or {}).items():
            blob = self.blobs[name]
            value = np.asarray(value)
            if value.shape != blob.shape:
                raise ShapeError(f"diff for blob {name!r}: expected shape {blob.shape}, got {value.shape}")
            blob.diff[...] = value

    def backward_steps(self):
        """[(layer, step)]: the per-layer calls ``backward`` makes after ``seed_diffs``, in
        order; ``step()`` runs that layer's backward with the net's propagate_down flags
        (decaf profile times each one)."""
        return list(self._backward_steps)

    def _rerun_as_written(self):
        """If the last forward ran the optimized graph, run it again as written: backward reads
        the state every layer keeps from its forward (and the blobs the graph skipped)."""
        if self._rerun is not None:
            self._own_memory()
            for step in self._written_steps(self._rerun[0]):
                step()
            self._rerun = None

    def backward(self, diffs=None):
        """Backpropagate from the loss layers (weighted by loss_weight) and ``diffs``.

        ``diffs`` maps output blob names to gradients of the objective with
        respect to them. Fills every parameter's ``diff`` (only the trained ones after
        ``set_trained_only()``) and, with ``force_backward``, the input blobs' diffs.
        Returns {input: diff copy}. One thread at a time (decaf/exclusive.py).
        """
        with exclusive(self, "backward"):
            self._rerun_as_written()       # after an optimized forward (decaf/optimize.py)
            self.seed_diffs(diffs)
            for _, step in self._backward_steps:
                step()
            if self.force_backward:
                return {n: self.blobs[n].diff.copy() for n in self.input_shapes}
            return {}

    # ---- parameters -----------------------------------------------------------
    def param_arrays(self):
        """{param name: copy of its data}."""
        return {name: p.data.copy() for name, p in self.params.items()}

    def load_params(self, arrays, strict=True):
        """Copy arrays (name -> array) into the parameters, checking names and shapes."""
        if strict:
            missing = sorted(set(self.params) - set(arrays))
            extra = sorted(set(arrays) - set(self.params))
            if missing or extra:
                raise KeyError(f"net {self.name!r}: parameters missing {missing[:5]}"
                               f"{'...' if len(missing) > 5 else ''}, unexpected {extra[:5]}"
                               f"{'...' if len(extra) > 5 else ''}")
        for name, value in arrays.items():
            if name in self.params:
                self.params[name].set(value)

    def astype(self, dtype):
        """Switch every blob and parameter to ``dtype`` (float64 for gradient checks)."""
        self._own_memory()
        self._graph = self._rerun = None      # folded layers are rebuilt in the new dtype
        for blob in list(self.blobs.values()) + list(self.params.values()):
            blob.astype(dtype)
        for layer in self.order:
            for blob in self.bottoms[layer.name] + self.tops[layer.name]:
                if blob.dtype != np.dtype(dtype):
                    blob.astype(dtype)
        self.batch_size = None
        return self

    def describe(self):
        """One line per layer: name, type, bottom and top shapes."""
        lines = []
        for layer in self.order:
            b = ", ".join(f"{x.name}{x.shape}" for x in self.bottoms[layer.name])
            t = ", ".join(f"{x.name}{x.shape}" for x in self.tops[layer.name])
            lines.append(f"{layer.name:<14} {layer.type_name:<18} {b} -> {t}")
        return "\n".join(lines)

    # ---- conveniences: forward's argument forms, the notebook view (issue 15) ----------------
    def _forward_args(self, inputs, outputs):
        """``forward(x)`` with one array: the net's one input (of those ``outputs`` need);
        ``outputs="fc7"``: one blob name."""
        if isinstance(outputs, str):
            outputs = [outputs]
        if inputs is not None and not hasattr(inputs, "keys"):
            wanted = list(self.input_shapes)
            if len(wanted) > 1 and outputs is not None:
                wanted = [n for n in wanted if any(self.blobs[n] in self.bottoms[layer.name]
                                                   for layer in self.plan(outputs))]
            if len(wanted) != 1:
                raise TypeError(f"net {self.name!r} has inputs {list(self.input_shapes)}: pass them by name, "
                                f"forward({{'{wanted[0] if wanted else 'data'}': x, ...}}) or forward(name=x)")
            inputs = {wanted[0]: inputs}
        return inputs, outputs

    def _repr_html_(self):
        """The layer table in Jupyter: name, type, bottoms and tops with shapes, parameters."""
        from html import escape

        def blobs(items):
            return "<br>".join(f"{escape(b.name)} {escape(str(b.shape[1:]))}" for b in items)
        rows = []
        for layer in self.order:
            n = sum(p.data.size for p in layer.blobs)
            rows.append(f"<tr><td>{escape(layer.name)}</td><td>{escape(layer.type_name)}</td>"
                        f"<td>{blobs(self.bottoms[layer.name])}</td><td>{blobs(self.tops[layer.name])}</td>"
                        f"<td style='text-align:right'>{n:,}</td></tr>")
        total = sum(p.data.size for p in self.params.values())
        inputs = ", ".join(f"{escape(k)} {v}" for k, v in self.input_shapes.items())
        return (f"<p><b>Net {escape(self.name)}</b>: {len(self.order)} layers, {total:,} parameters; inputs "
                f"{inputs} (shapes per example)</p><table><thead><tr><th>layer</th><th>type</th><th>bottoms</th>"
                f"<th>tops</th><th>params</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


class _BackwardStep:
    """One layer's backward with its arguments fixed. ``layer.backward`` is looked up at each
    call, so wrapping a layer's backward (examples/two_layer_net.py prints each one) still works."""
    __slots__ = ("layer", "args")

    def __init__(self, layer, top, propagate_down, bottom):
        self.layer, self.args = layer, (top, propagate_down, bottom)

    def __call__(self):
        self.layer.backward(*self.args)
