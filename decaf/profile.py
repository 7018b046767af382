"""Per-layer timing, MACs and bytes of any net, rolled up by layer type (the paper's Figure 3).

    from decaf.profile import profile
    result = profile(net, batch=10, iters=10)      # a ProfileResult
    print(result.table())
    result.to_json("caffenet.json"); result.to_csv("caffenet.csv"); result.plot("caffenet.png")

How the times are taken (docs/profiling.md says how to read them):

* Random inputs of ``batch`` examples (standard normal data; integer labels below the class count
  for the label bottom of a SoftmaxWithLoss) are set once.
* Each iteration runs one *instrumented* pass -- the calls ``net.forward`` makes
  (``net.forward_steps()``: in the test phase the optimized graph's layers, decaf/optimize.py),
  each timed on its own with ``time.perf_counter`` -- and one *whole* pass,
  ``net.forward()``, timed as a whole. The per-layer calls are exactly the calls ``net.forward``
  makes, so the per-layer times are a decomposition of a pass: their sum must match the whole pass
  (the header shows the difference; the tests hold it within 10 %). The two kinds of pass alternate
  in order (instrumented first on even iterations, whole first on odd ones) so both see the same
  machine.
* With ``backward`` the same is done for the backward pass (the layers in reverse order, each
  ``backward`` call timed; the whole ``net.backward`` timed separately). A net without a loss
  layer gets random gradients on its outputs.
* ``warmup`` iterations come first and are discarded; each reported time is the median over
  ``iters`` iterations, with the min and max next to it.

Counting (per image, from the blob shapes; each layer type counts for itself: ``Layer.macs``,
``Layer.ops``, ``Layer.bytes_moved`` and ``Layer.group`` in its module):

* MACs (multiply-accumulates): convolution ``Ho*Wo*K*(C/group)*kh*kw``, inner product
  ``in*out``; every other layer 0 (biases are not MACs).
* ``ops``: other arithmetic, an estimate (bias adds, one comparison per pooling window element,
  a few per element for LRN, softmax, normalisation, ...). FLOPs = 2 * MACs + ops.
* ``bytes`` (per batch): parameters + bottoms read + tops written, in the blobs' dtype. A lower
  bound on the memory traffic (im2col buffers and re-reads from cache misses are not counted).
  Split layers share their input (no copy): 0 bytes.
"""
import csv
import io
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field

import numpy as np

# ---- the groups of the paper's Figure 3: each layer type names its own (Layer.group) ------------

GROUPS = ("conv", "fc", "pool", "neuron", "LRN", "norm", "other")

BUSY_GAP = 0.10   # a larger gap between the per-layer sum and the whole net earns a note


# ---- results ------------------------------------------------------------------------------------

@dataclass
class LayerProfile:
    name: str
    type: str                  # the layer type (Convolution, ReLU, ...)
    group: str                 # conv, fc, pool, neuron, LRN, norm, other
    output_shape: list         # the first top's shape, batch included
    params: int                # learnable parameters
    macs: int                  # multiply-accumulates per image
    flops: int                 # 2 * macs + ops, per image
    bytes: int                 # parameters + bottoms + tops, per batch
    forward_ms: float          # median over the iterations, per batch
    forward_min_ms: float
    forward_max_ms: float
    gflops: float              # forward FLOPs of the batch / forward time
    intensity: float           # forward FLOPs per byte moved
    share: float               # of the summed forward time (0..1)
    backward_ms: float = None
    backward_min_ms: float = None
    backward_max_ms: float = None
    backward_share: float = None


@dataclass
class ProfileResult:
    net: str
    batch: int
    iters: int
    warmup: int
    phase: str
    threads: int               # decaf's kernel threads
    blas_threads: int          # NumPy's BLAS threads (None when unknown); decaf's own GEMMs use `threads`
    blas: str
    cpu: str
    decaf_version: str
    backend: str               # "compiled" or "numpy" kernels
    layers: list               # [LayerProfile] in run order
    by_type: dict              # group -> {forward_ms, share, layers, macs, [backward_ms, backward_share]}
    total_forward_ms: float    # sum of the per-layer medians
    net_forward_ms: float      # median of the whole net.forward, measured separately
    net_forward_min_ms: float
    net_forward_max_ms: float
    macs: int                  # per image, whole net
    params: int
    layers_pass_ms: float = None     # median over the instrumented passes of their per-layer sum
    total_backward_ms: float = None
    layers_backward_pass_ms: float = None
    net_backward_ms: float = None
    net_backward_min_ms: float = None
    net_backward_max_ms: float = None
    notes: list = field(default_factory=list)

    @property
    def forward_gap(self):
        """(sum of per-layer medians) / (whole-net median) - 1: the part of a pass the layers miss."""
        return self.total_forward_ms / self.net_forward_ms - 1 if self.net_forward_ms else float("nan")

    @property
    def pass_gap(self):
        """(median instrumented pass) / (median whole pass) - 1: overhead or double counting."""
        return self.layers_pass_ms / self.net_forward_ms - 1 if self.net_forward_ms else float("nan")

    @property
    def backward_gap(self):
        if not self.net_backward_ms:
            return None
        return self.total_backward_ms / self.net_backward_ms - 1

    def to_dict(self):
        d = asdict(self)
        d["forward_gap"] = self.forward_gap
        d["backward_gap"] = self.backward_gap
        d["pass_gap"] = self.pass_gap
        return d

    def to_json(self, path=None):
        """The result as JSON text; written to ``path`` too when given ("-" for stdout)."""
        text = json.dumps(self.to_dict(), indent=2)
        _write(path, text + "\n")
        return text

    CSV_COLUMNS = ("name", "type", "group", "output_shape", "params", "macs", "flops", "bytes",
                   "forward_ms", "forward_min_ms", "forward_max_ms", "gflops", "intensity", "share",
                   "backward_ms", "backward_min_ms", "backward_max_ms", "backward_share")

    def to_csv(self, path=None):
        """One row per layer (output_shape as 10x96x55x55; backward columns empty without it)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.CSV_COLUMNS)
        for layer in self.layers:
            row = asdict(layer)
            row["output_shape"] = "x".join(map(str, layer.output_shape))
            writer.writerow(["" if row[c] is None else row[c] for c in self.CSV_COLUMNS])
        _write(path, out.getvalue())
        return out.getvalue()

    def plot(self, path, **kw):
        """Write the Figure 3 picture (per-layer bars, pie by type) to ``path``."""
        from .profile_plot import plot_profile
        return plot_profile(self, path, **kw)

    def header(self):
        """The lines above the table: what was measured, where, and the whole-net check."""
        blas_threads = "?" if self.blas_threads is None else self.blas_threads
        lines = [f"decaf profile: {self.net}, batch {self.batch}, phase {self.phase}, "
                 f"median of {self.iters} iterations after {self.warmup} warm-up",
                 f"machine: {self.cpu}; threads {self.threads} (NumPy's BLAS {blas_threads}); BLAS {self.blas}; "
                 f"decaf {self.decaf_version} ({self.backend} kernels)",
                 f"forward: {self.net_forward_ms:.2f} ms per batch, {self.net_forward_ms / self.batch:.2f} ms "
                 f"per image (whole net, min {self.net_forward_min_ms:.2f}, max {self.net_forward_max_ms:.2f}); "
                 f"per-layer sum {self.total_forward_ms:.2f} ms ({100 * self.forward_gap:+.1f} %)"
                 + (f", instrumented passes {self.layers_pass_ms:.2f} ms" if self.layers_pass_ms else "")]
        if self.net_backward_ms is not None:
            lines.append(f"backward: {self.net_backward_ms:.2f} ms per batch (whole net, min "
                         f"{self.net_backward_min_ms:.2f}, max {self.net_backward_max_ms:.2f}); per-layer sum "
                         f"{self.total_backward_ms:.2f} ms ({100 * self.backward_gap:+.1f} %), instrumented "
                         f"passes {self.layers_backward_pass_ms:.2f} ms")
        lines.append(f"work: {self.macs / 1e6:,.1f} M MACs per image, {self.params:,} parameters")
        lines += [f"note: {n}" for n in self.notes]
        return lines

    def table(self):
        """A readable text table: the header, one line per layer, then the roll-up by type."""
        bwd = self.total_backward_ms is not None
        width = max([len(x.name) for x in self.layers] + [5])
        tw = max([len(x.type) for x in self.layers] + [4])
        cols = (f"{'layer':<{width}}  {'type':<{tw}}  {'output':<16} {'params':>11} {'MMACs':>9} {'MB':>8}"
                f"  {'fwd ms':>8} {'(min-max)':>17} {'GFLOP/s':>8} {'share':>6}")
        if bwd:
            cols += f"  {'bwd ms':>8} {'share':>6}"
        lines = self.header() + ["", cols, "-" * len(cols)]
        for x in self.layers:
            rng = f"({x.forward_min_ms:.2f}-{x.forward_max_ms:.2f})"
            shape = "x".join(map(str, x.output_shape)) or "scalar"
            line = (f"{x.name:<{width}}  {x.type:<{tw}}  {shape:<16} {x.params:>11,}"
                    f" {x.macs / 1e6:>9.1f} {x.bytes / 1e6:>8.2f}  {x.forward_ms:>8.3f} {rng:>17}"
                    f" {x.gflops:>8.1f} {100 * x.share:>5.1f}%")
            if bwd:
                line += f"  {x.backward_ms:>8.3f} {100 * x.backward_share:>5.1f}%"
            lines.append(line)
        lines.append("-" * len(cols))
        total = (f"{'total':<{width}}  {'':<{tw}}  {'':<16} {self.params:>11,} {self.macs / 1e6:>9.1f}"
                 f" {sum(x.bytes for x in self.layers) / 1e6:>8.2f}  {self.total_forward_ms:>8.3f} {'':>17}"
                 f" {_gflops(2 * self.macs * self.batch, self.total_forward_ms):>8.1f} {100.0:>5.1f}%")
        if bwd:
            total += f"  {self.total_backward_ms:>8.3f} {100.0:>5.1f}%"
        lines.append(total)
        lines += ["", "by type:" + " " * 6 + f"{'layers':>6} {'MMACs':>9} {'fwd ms':>9} {'share':>6}"
                  + (f" {'bwd ms':>9} {'share':>6}" if bwd else "")]
        for group, g in self.by_type.items():
            line = (f"  {group:<12}{g['layers']:>6} {g['macs'] / 1e6:>9.1f} {g['forward_ms']:>9.3f}"
                    f" {100 * g['share']:>5.1f}%")
            if bwd:
                line += f" {g['backward_ms']:>9.3f} {100 * g['backward_share']:>5.1f}%"
            lines.append(line)
        return "\n".join(lines)

    def __str__(self):
        return self.table()


def _write(path, text):
    if path is None:
        return
    if str(path) == "-":
        import sys
        sys.stdout.write(text)
        return
    with open(path, "w") as f:
        f.write(text)


def _gflops(flops, ms):
    return flops / (ms * 1e6) if ms > 0 else 0.0


# ---- the machine --------------------------------------------------------------------------------

def cpu_model():
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere), with the core count."""
    name = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name}, {os.cpu_count()} logical cores"


# ---- the measurement ----------------------------------------------------------------------------

def random_inputs(net, batch, seed=0):
    """{input: array}: standard normal data; integer labels below the class count for a blob that a
    SoftmaxWithLoss reads as its labels (0/1 for other scalar inputs)."""
    rng = np.random.default_rng(seed)
    classes = {}
    for layer in net.order:
        if "classifier_loss" in layer.roles:
            label = net.bottoms[layer.name][1]
            classes[id(label)] = net.bottoms[layer.name][0].shape[1]
    inputs = {}
    for name, shape in net.input_shapes.items():
        blob = net.blobs[name]
        if id(blob) in classes or shape == ():
            inputs[name] = rng.integers(0, classes.get(id(blob), 2), (batch,) + shape).astype(np.float32)
        else:
            inputs[name] = rng.standard_normal((batch,) + shape, dtype=np.float32)
    return inputs


def _pass_median(per_layer):
    """Median over the passes of the pass's summed layer times (ms)."""
    if not per_layer:
        return 0.0
    return float(np.median(np.sum(np.asarray(per_layer), axis=0)) * 1e3)


def _stats(seconds):
    ms = np.asarray(seconds) * 1e3
    return float(np.median(ms)), float(ms.min()), float(ms.max())


class _Passes:
    """The four kinds of pass, with everything looked up before the clock starts."""

    def __init__(self, net, output_diffs):
        self.net = net
        self.steps = net.forward_steps()    # Net.forward's own per-layer calls (the optimized graph's)
        self.graph = net.optimized_graph()
        # Net.backward's own per-layer calls, so the layer times are of exactly what it runs
        steps = net.backward_steps()
        self.bwd_layers = [layer for layer, _ in steps]
        self.bwd = [step for _, step in steps]
        self.output_diffs = output_diffs
        self.fwd_times = [[] for _ in self.steps]
        self.bwd_times = [[] for _ in self.bwd]
        self.net_fwd, self.net_bwd = [], []

    def layers_forward(self, keep):
        clock = time.perf_counter
        times = []
        for step in self.steps:
            t0 = clock()
            step()
            times.append(clock() - t0)
        if keep:
            for store, t in zip(self.fwd_times, times):
                store.append(t)

    def layers_backward(self, keep):
        self.net.seed_diffs(self.output_diffs)   # outside the clock: Net.backward does it before the first layer
        clock = time.perf_counter
        times = []
        for step in self.bwd:
            t0 = clock()
            step()
            times.append(clock() - t0)
        if keep:
            for store, t in zip(self.bwd_times, times):
                store.append(t)

    def whole_forward(self, keep):
        t0 = time.perf_counter()
        self.net.forward()
        t = time.perf_counter() - t0
        if keep:
            self.net_fwd.append(t)

    def whole_backward(self, keep):
        t0 = time.perf_counter()
        self.net.backward(self.output_diffs)
        t = time.perf_counter() - t0
        if keep:
            self.net_bwd.append(t)


def profile(net, batch=10, iters=10, warmup=2, backward=False, threads=None, progress=True,
            phase=None, seed=0, name=None, notes=()):
    """Time every layer of ``net`` (forward, and backward with ``backward=True``) on random inputs
    of ``batch`` examples; count its MACs, FLOPs and bytes; roll up by layer type.

    ``iters`` timed iterations follow ``warmup`` discarded ones; each reports the median (min, max).
    ``threads``: threads for decaf's kernels and the BLAS during the run (None: as they are).
    ``phase``: "test" or "train" (default: "train" with ``backward``, else "test"); the net's phase
    and non-learnable parameters (BatchNorm running statistics) are restored afterwards.
    ``progress``: a tqdm bar on stderr. ``notes`` are copied into the result (e.g. "random weights").
    Returns a :class:`ProfileResult`.
    """
    import decaf
    from . import kernels
    from .blas import blas_info
    from .threads import get_num_threads, using_threads

    batch, iters, warmup = int(batch), int(iters), int(warmup)
    if batch < 1 or iters < 1 or warmup < 0:
        raise ValueError(f"need batch >= 1, iters >= 1 and warmup >= 0 (got {batch}, {iters}, {warmup})")
    phase = phase or ("train" if backward else "test")
    old_phase, old_optimize = net.phase, net.optimize
    frozen = {k: p.data.copy() for k, p in net.params.items() if not p.learnable}
    notes = list(notes)
    try:
        net.set_phase(phase)
        net.optimize = old_optimize and not backward    # a backward needs the forward as written
        inputs = random_inputs(net, batch, seed)
        net.forward(inputs)     # sizes every blob for the batch
        rng = np.random.default_rng(seed + 1)
        loss_tops = {id(net.tops[layer.name][0]) for layer in net.order if layer.loss_weight}
        output_diffs = {}
        if backward:
            output_diffs = {n: rng.standard_normal(net.blobs[n].shape).astype(net.blobs[n].dtype)
                            for n in net.output_names if id(net.blobs[n]) not in loss_tops}
            if not any(net.needs_backward.values()):
                notes.append("no layer needs a backward pass (no learnable parameters)")
        passes = _Passes(net, output_diffs)

        with using_threads(threads):
            kernel_threads, blas_threads = get_num_threads()
            bar = _progress(warmup + iters, net.name, progress)
            try:
                for i in range(warmup + iters):
                    keep = i >= warmup
                    layer_pass = [passes.layers_forward] + ([passes.layers_backward] if backward else [])
                    whole_pass = [passes.whole_forward] + ([passes.whole_backward] if backward else [])
                    # alternate which kind of pass goes first, so drift and cache state hit both alike
                    for step in (layer_pass + whole_pass if i % 2 == 0 else whole_pass + layer_pass):
                        step(keep)
                    bar.update(1)
            finally:
                bar.close()
    finally:
        net.set_phase(old_phase)
        net.optimize = old_optimize
        for k, value in frozen.items():
            net.params[k].data[...] = value

    # ---- assemble ----
    bwd_index = {layer.name: i for i, layer in enumerate(passes.bwd_layers)}
    layers, fused = [], []
    for step, times in zip(passes.steps, passes.fwd_times):
        layer, bottoms, tops = step.layer, step.bottoms, step.tops
        bshapes, tshapes = [b.shape for b in bottoms], [t.shape for t in tops]
        macs = layer.macs(bshapes, tshapes)
        flops = 2 * macs + layer.ops(bshapes, tshapes)
        nbytes = layer.bytes_moved(bottoms, tops)
        med, lo, hi = _stats(times)
        entry = LayerProfile(
            name=layer.name, type=layer.type_name, group=layer.group,
            output_shape=list(tshapes[0]) if tshapes else [], macs=int(macs), flops=int(flops), bytes=int(nbytes),
            params=int(sum(p.data.size for p in layer.blobs if p.learnable)),
            forward_ms=med, forward_min_ms=lo, forward_max_ms=hi,
            gflops=_gflops(flops * batch, med), intensity=flops * batch / nbytes if nbytes else 0.0, share=0.0)
        if step.fused:   # its forward ran inside the layer before it
            entry.gflops = 0.0
            fused.append(layer.name)
        if backward:
            if layer.name in bwd_index:
                entry.backward_ms, entry.backward_min_ms, entry.backward_max_ms = _stats(
                    passes.bwd_times[bwd_index[layer.name]])
            else:
                entry.backward_ms = entry.backward_min_ms = entry.backward_max_ms = 0.0
        layers.append(entry)

    total_fwd = sum(x.forward_ms for x in layers)
    total_bwd = sum(x.backward_ms for x in layers) if backward else None
    for x in layers:
        x.share = x.forward_ms / total_fwd if total_fwd else 0.0
        if backward:
            x.backward_share = x.backward_ms / total_bwd if total_bwd else 0.0
    by_type = {}
    for group in GROUPS:
        members = [x for x in layers if x.group == group]
        if not members:
            continue
        g = {"layers": len(members), "macs": sum(x.macs for x in members),
             "forward_ms": sum(x.forward_ms for x in members)}
        g["share"] = g["forward_ms"] / total_fwd if total_fwd else 0.0
        if backward:
            g["backward_ms"] = sum(x.backward_ms for x in members)
            g["backward_share"] = g["backward_ms"] / total_bwd if total_bwd else 0.0
        by_type[group] = g

    fwd = _stats(passes.net_fwd)
    bwd = _stats(passes.net_bwd) if backward else (None, None, None)
    graph = passes.graph
    if graph is not None:
        notes += [f"graph optimizer: {line}" for line in graph.summary()] or ["graph optimizer: nothing to rewrite"]
    if fused:
        notes.append(f"{', '.join(fused)}: applied inside the layer before each (fused); their forward "
                     "time is counted there")
    if fwd[0] and abs(total_fwd / fwd[0] - 1) > BUSY_GAP:
        notes.append(f"the per-layer medians add up to {100 * total_fwd / fwd[0]:.0f} % of the whole-net median: "
                     "the machine was probably busy (stalls hit random layers, so the median of each layer "
                     "misses them while most whole passes catch some); try --threads 1, more --iters or a "
                     "quieter machine")
    return ProfileResult(
        net=name or net.name, batch=batch, iters=iters, warmup=warmup, phase=phase,
        threads=int(kernel_threads), blas_threads=blas_threads, blas=blas_info(), cpu=cpu_model(),
        decaf_version=decaf.__version__, backend=kernels.get_backend(), layers=layers, by_type=by_type,
        total_forward_ms=total_fwd, net_forward_ms=fwd[0], net_forward_min_ms=fwd[1], net_forward_max_ms=fwd[2],
        total_backward_ms=total_bwd, net_backward_ms=bwd[0], net_backward_min_ms=bwd[1],
        net_backward_max_ms=bwd[2], layers_pass_ms=_pass_median(passes.fwd_times),
        layers_backward_pass_ms=_pass_median(passes.bwd_times) if backward else None,
        macs=int(sum(x.macs for x in layers)), params=int(sum(x.params for x in layers)), notes=notes)


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress(total, label, enabled):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    import sys
    return tqdm(total=total, desc=f"profiling {label}", unit="it", file=sys.stderr, leave=False)


def macs_per_layer(net):
    """{layer name: MACs per image} from the net's current shapes (no timing)."""
    out = {}
    for layer in net.order:
        bshapes = [b.shape for b in net.bottoms[layer.name]]
        tshapes = [t.shape for t in net.tops[layer.name]]
        out[layer.name] = int(layer.macs(bshapes, tshapes))
    return out


__all__ = ["profile", "ProfileResult", "LayerProfile", "macs_per_layer", "random_inputs", "cpu_model", "GROUPS"]
