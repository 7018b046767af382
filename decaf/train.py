"""The training loop, evaluation, snapshots and resume, logs, and fine-tuning surgery on specs.

One training iteration (``Trainer.step``), the inference path run backwards:

    x, y = data.next()                      # a seeded, augmented minibatch (decaf/data.py)
    net.forward({data: x, label: y})        # phase "train": dropout masks, batch statistics
    loss = net.loss()                       # stops with TrainingError if it is not finite
    net.backward()                          # every trained Param.diff
    solver.step()                           # decaf/solvers: decay, clipping, the update rule

A *classification net* here is one with a ``SoftmaxWithLoss`` layer whose bottoms are the class
scores and a label input; the other input is the data. ``training_spec`` turns a deploy spec
(ending in a ``Softmax``) into one, ``deploy_spec`` goes back.

A snapshot is a ``.decaf`` file (``decaf.save``, written atomically) holding the training spec,
the parameters, and under ``extra["train"]`` everything else a resume needs: the iteration, the
solver's config and state (its arrays as extra arrays), the data iterator's position, epoch
order and generator state, every layer's generator (dropout), the log so far. Resuming from it
gives bit-identical parameters to an uninterrupted run.

Fine-tuning (Oquab et al. 2014; the Caffe recipe): ``replace_classifier`` (a new last layer for
new classes), ``add_adaptation_layers`` (FCa + ReLU + FCb on top of a feature blob), ``freeze``
(lr_mult 0 everywhere else), then ``finetune_net`` builds the net and copies the pretrained
weights into every layer kept from the old net.
"""
import copy
import csv
import json
import math
import os
import time

import numpy as np

from .data import Batches, check_labels
from . import layers as _layers  # noqa: F401  (registers the layer types asked about below)
from .errors import SpecError
from .layer import LAYERS, Layer
from .net import Net


class TrainingError(ValueError):
    """Training cannot go on (a non-finite loss, data that does not fit the net)."""


# ---- specs: roles, loss, surgery -----------------------------------------------------------

def _names(v):
    return [v] if isinstance(v, str) else list(v)


def _layer_class(layer):
    """The registered class of a spec layer (decaf.layer.Layer for an unknown type: validation
    names those later)."""
    return LAYERS.get(layer.get("type"), Layer)


def _has_role(layer, role):
    return role in _layer_class(layer).roles


def _spec_of(spec_or_net):
    return copy.deepcopy(spec_or_net.spec if hasattr(spec_or_net, "spec") else spec_or_net)


def roles(spec):
    """{"data", "label", "scores", "loss"}: the blob and layer names a classification net trains with."""
    losses = [layer for layer in spec["layers"] if _has_role(layer, "classifier_loss")]
    if not losses:
        raise SpecError(f"net {spec.get('name', 'net')!r} has no SoftmaxWithLoss layer to train "
                        "(training_spec() adds one in place of a final Softmax)")
    loss = losses[0]
    scores, label = _names(loss["bottom"])
    if label not in spec["inputs"]:
        raise SpecError(f"the label blob {label!r} of layer {loss['name']!r} must be a net input")
    data = [n for n in spec["inputs"] if n != label]
    if len(data) != 1:
        raise SpecError(f"the trainer needs exactly one data input besides {label!r}, the net has {data}")
    return {"data": data[0], "label": label, "scores": scores, "loss": loss["name"]}


def training_spec(spec, label="label"):
    """A copy of ``spec`` with a SoftmaxWithLoss: a final Softmax is replaced by one (its bottom
    becomes the scores), and a ``label`` input (one class index per example) is added."""
    spec = _spec_of(spec)
    if any(_has_role(layer, "classifier_loss") for layer in spec["layers"]):
        return spec
    read = {b for layer in spec["layers"] for b in _names(layer.get("bottom", []))}
    finals = [i for i, layer in enumerate(spec["layers"])
              if _has_role(layer, "probabilities") and not set(_names(layer["top"])) & read]
    if not finals:
        raise SpecError(f"net {spec.get('name', 'net')!r} has neither a SoftmaxWithLoss nor a final Softmax "
                        "layer: add a loss to train it")
    old = spec["layers"][finals[-1]]
    taken = {layer["name"] for layer in spec["layers"]}
    spec["layers"][finals[-1]] = {"name": "loss" if "loss" not in taken - {old["name"]} else old["name"] + "_loss",
                                  "type": "SoftmaxWithLoss", "bottom": [_names(old["bottom"])[0], label],
                                  "top": "loss"}
    spec["inputs"][label] = []
    return spec


def deploy_spec(spec):
    """A copy of a training spec for inference: the SoftmaxWithLoss becomes a Softmax ``prob``
    and the label input goes away. Parameter names are unchanged."""
    spec = _spec_of(spec)
    r = roles(spec)
    layers = []
    for layer in spec["layers"]:
        if layer["name"] == r["loss"]:
            layer = {"name": "prob", "type": "Softmax", "bottom": r["scores"], "top": "prob"}
        layers.append(layer)
    spec["layers"] = layers
    if not any(r["label"] in _names(layer.get("bottom", [])) for layer in layers):
        del spec["inputs"][r["label"]]
    return spec


def _find(spec, name):
    for i, layer in enumerate(spec["layers"]):
        if layer["name"] == name:
            return i
    raise SpecError(f"net {spec.get('name', 'net')!r} has no layer {name!r} "
                    f"(layers: {[layer['name'] for layer in spec['layers']]})")


def replace_classifier(spec, layer_name, num_classes, new_name=None):
    """A copy of ``spec`` (or of ``net.spec``) where layer ``layer_name`` (InnerProduct or
    Convolution) outputs ``num_classes`` and is renamed ``new_name`` (default ``<layer>_new``), so
    that pretrained weights are not copied into it; its top blob keeps its name."""
    spec = _spec_of(spec)
    i = _find(spec, layer_name)
    layer = spec["layers"][i]
    if not _has_role(layer, "classifier"):
        raise SpecError(f"layer {layer_name!r} is a {layer['type']}: the classifier to replace must be "
                        "an InnerProduct or Convolution layer")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    new_name = new_name or f"{layer_name}_new"
    if new_name != layer_name and any(x["name"] == new_name for x in spec["layers"]):
        raise SpecError(f"net already has a layer named {new_name!r}")
    layer = {k: v for k, v in layer.items() if k not in ("lr_mult", "decay_mult")}
    layer.update(name=new_name, num_output=int(num_classes))
    spec["layers"][i] = layer
    return spec


def add_adaptation_layers(spec, feature_blob, num_classes, hidden=2048, with_loss=True, label="label"):
    """Oquab et al.'s adaptation: keep only the layers that compute ``feature_blob`` (including
    in-place ones on it, e.g. ReLU and dropout), then add

        fca (InnerProduct, hidden) -> relu_a -> fcb (InnerProduct, num_classes) -> loss (or prob)

    Returns a new spec; combine with ``freeze(spec, ADAPTATION_LAYERS)``."""
    spec = _spec_of(spec)
    tops = {t for layer in spec["layers"] for t in _names(layer["top"])} | set(spec["inputs"])
    if feature_blob not in tops:
        raise SpecError(f"net {spec.get('name', 'net')!r} has no blob {feature_blob!r}")
    needed, kept = {feature_blob}, []
    for layer in reversed(spec["layers"]):
        if set(_names(layer["top"])) & needed:
            kept.append(layer)
            needed |= set(_names(layer.get("bottom", [])))
    kept.reverse()
    clash = {layer["name"] for layer in kept} & set(ADAPTATION_LAYERS + ("loss", "prob"))
    if clash:
        raise SpecError(f"net already has layer(s) {sorted(clash)}")
    new = [{"name": "fca", "type": "InnerProduct", "bottom": feature_blob, "top": "fca", "num_output": int(hidden)},
           {"name": "relu_a", "type": "ReLU", "bottom": "fca", "top": "fca"},
           {"name": "fcb", "type": "InnerProduct", "bottom": "fca", "top": "fcb", "num_output": int(num_classes)}]
    inputs = {k: v for k, v in spec["inputs"].items() if k in needed}
    if with_loss:
        new.append({"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["fcb", label], "top": "loss"})
        inputs[label] = []
    else:
        new.append({"name": "prob", "type": "Softmax", "bottom": "fcb", "top": "prob"})
    spec["layers"] = kept + new
    spec["inputs"] = inputs
    return spec


ADAPTATION_LAYERS = ("fca", "relu_a", "fcb")


def freeze(spec, except_layers=()):
    """A copy of ``spec`` in which every layer not named in ``except_layers`` gets lr_mult 0 and
    decay_mult 0 (its parameters never change), and frozen BatchNorm layers use their stored
    statistics (``use_global_stats``) so that those do not move either."""
    spec = _spec_of(spec)
    names = {layer["name"] for layer in spec["layers"]}
    unknown = sorted(set(except_layers) - names)
    if unknown:
        raise SpecError(f"freeze: no layer(s) {unknown} in net {spec.get('name', 'net')!r}")
    for layer in spec["layers"]:
        if layer["name"] in except_layers:
            continue
        layer["lr_mult"], layer["decay_mult"] = 0, 0
        if _layer_class(layer).normalises:
            layer["use_global_stats"] = True
    return spec


def transfer_weights(net, params):
    """Copy every array of ``params`` (name -> array) whose name and shape match a parameter of
    ``net``; returns the names copied. A same-named parameter of another shape is an error."""
    copied = []
    for name, value in params.items():
        if name in net.params:
            if tuple(value.shape) != net.params[name].shape:
                raise ValueError(f"pretrained {name!r} has shape {tuple(value.shape)}, the new net wants "
                                 f"{net.params[name].shape}: rename the layer (replace_classifier does)")
            net.params[name].set(value)
            copied.append(name)
    return copied


def finetune_net(pretrained, num_classes, classifier=None, feature_blob=None, hidden=2048,
                 train_all=False, seed=0):
    """A training Net from a pretrained Net (or a (spec, params) pair) for ``num_classes`` classes:
    either its ``classifier`` layer replaced (by ``<classifier>_new``), or adaptation layers on
    ``feature_blob``; every other layer frozen unless ``train_all``; all kept weights copied."""
    spec, params = (pretrained.spec, pretrained.param_arrays()) if hasattr(pretrained, "spec") else pretrained
    if (classifier is None) == (feature_blob is None):
        raise ValueError("give exactly one of classifier (a layer to replace) and feature_blob (to adapt)")
    if classifier is not None:
        spec = training_spec(replace_classifier(spec, classifier, num_classes))
        new = [classifier + "_new"]
    else:
        spec = add_adaptation_layers(spec, feature_blob, num_classes, hidden)
        new = list(ADAPTATION_LAYERS)
    if not train_all:
        spec = freeze(spec, new)
    net = Net(spec, phase="train", seed=seed)
    transfer_weights(net, params)
    return net


def skip_frozen_backward(net):
    """Let backward skip layers below which nothing is trained (``Net.set_trained_only``):
    with a frozen feature extractor that is most of the work."""
    return net.set_trained_only(True)


# ---- evaluation ----------------------------------------------------------------------------

def evaluate(net, data, batch_size=256):
    """{"loss", "accuracy", "n"} of ``net`` over ``data`` (a Batches or a source), in test phase.

    The loss is the mean over the examples of SoftmaxWithLoss; accuracy the share of examples
    whose highest score is the label."""
    r = roles(net.spec)
    if not isinstance(data, Batches):
        data = Batches(data, batch_size, shuffle=False)
    phase = net.phase
    net.set_phase("test")
    total_loss, correct, n = 0.0, 0, 0
    loss_top = net.tops[r["loss"]][0].name
    try:
        for x, y in data.eval_batches(batch_size):
            with np.errstate(over="ignore", invalid="ignore"):
                out = net.forward({r["data"]: x, r["label"]: y}, outputs=[r["scores"], loss_top])
            scores = out[r["scores"]].reshape(len(x), -1)
            correct += int(np.sum(scores.argmax(axis=1) == y))
            total_loss += float(out[loss_top]) * len(x)
            n += len(x)
    finally:
        net.set_phase(phase)
    return {"loss": total_loss / n, "accuracy": correct / n, "n": n}


# ---- the loop ------------------------------------------------------------------------------

class Trainer:
    """Train ``net`` (a classification Net, see ``roles``) with ``solver`` on ``data`` (Batches, or a
    source dealt in shuffled batches of 64 with seed 0).

    ``test_data``: a source or Batches evaluated every ``test_interval`` iterations (and at the
    end); ``display``: iterations per log row (loss and accuracy averaged over them);
    ``snapshot_interval`` and ``snapshot_prefix``: write ``<prefix>_iter_<n>.decaf`` every so often.
    ``history`` is a list of rows {iter, epoch, lr, loss, accuracy, test_loss, test_accuracy, seconds}.
    """

    def __init__(self, net, solver, data, test_data=None, test_interval=0, display=10,
                 snapshot_interval=0, snapshot_prefix=None, progress=False, log=None, labels=None,
                 preprocess=None):
        if not isinstance(data, Batches):
            data = Batches(data)
        self.net, self.solver, self.data = net, solver, data
        self.roles = roles(net.spec)
        net.set_phase("train")
        skip_frozen_backward(net)
        want = net.input_shapes[self.roles["data"]]
        if tuple(data.shape) != tuple(want):
            raise TrainingError(f"the data has examples of shape {tuple(data.shape)}, the net's input "
                                f"{self.roles['data']!r} wants {tuple(want)}")
        self.num_classes = self._num_classes()
        check_labels(data.source.labels, num_classes=self.num_classes, what="training labels")
        if test_data is not None and not isinstance(test_data, Batches):
            test_data = Batches(test_data, data.batch_size, shuffle=False, crop=data.crop)
        if test_data is not None:
            check_labels(test_data.source.labels, num_classes=self.num_classes, what="test labels")
            if tuple(test_data.shape) != tuple(want):
                raise TrainingError(f"the test data has examples of shape {tuple(test_data.shape)}, "
                                    f"the net wants {tuple(want)}")
        self.test_data = test_data
        self.test_interval, self.display = int(test_interval), max(int(display), 1)
        self.snapshot_interval, self.snapshot_prefix = int(snapshot_interval), snapshot_prefix
        self.progress, self.log = progress, log or (lambda message: None)
        self.labels, self.preprocess = labels, preprocess
        self.history, self.elapsed = [], 0.0
        self._window = [0.0, 0.0, 0]     # sums of loss and accuracy, count since the last row

    def _num_classes(self):
        scores = self.net.blobs[self.roles["scores"]]
        return int(scores.shape[1])

    @property
    def iter(self):
        return self.solver.iter

    def step(self):
        """One iteration; returns (loss, batch accuracy)."""
        r, net = self.roles, self.net
        x, y = self.data.next()
        with np.errstate(over="ignore", invalid="ignore"):     # a diverging run is reported below
            net.forward({r["data"]: x, r["label"]: y})
        loss = net.loss()
        if not math.isfinite(loss):
            raise TrainingError(f"the loss is {loss} at iteration {self.iter + 1} (learning rate "
                                f"{self.solver.lr:g}): training diverged; lower the learning rate or clip "
                                "gradients (--clip-norm)")
        scores = net.blobs[r["scores"]].data.reshape(len(y), -1)
        accuracy = float(np.mean(scores.argmax(axis=1) == y))
        with np.errstate(over="ignore", invalid="ignore"):
            net.backward()
            self.solver.step()
        w = self._window
        w[0] += loss
        w[1] += accuracy
        w[2] += 1
        return loss, accuracy

    def _row(self, test=None, lr=None, reset=True):
        w = self._window
        row = {"iter": self.iter, "epoch": round(self.iter * self.data.batch_size / len(self.data), 4),
               "lr": lr if lr is not None else self.solver.lr,
               "loss": w[0] / w[2] if w[2] else None, "accuracy": w[1] / w[2] if w[2] else None,
               "test_loss": test["loss"] if test else None, "test_accuracy": test["accuracy"] if test else None,
               "seconds": round(self.elapsed, 3)}
        if reset:
            self._window = [0.0, 0.0, 0]
        self.history.append(row)
        return row

    def evaluate(self, data=None):
        return evaluate(self.net, data if data is not None else self.test_data, self.data.batch_size)

    def run(self, iters):
        """Train until ``iters`` iterations are done in total (a resumed trainer continues)."""
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=iters, initial=self.iter, desc="train", unit="it", dynamic_ncols=True,
                       leave=False, disable=None)      # None: no bar when stderr is not a terminal
        start = time.perf_counter() - self.elapsed
        try:
            if self.iter == 0 and self.test_data is not None and self.test_interval:
                self._test_row()
            while self.iter < iters:
                lr = self.solver.lr
                loss, accuracy = self.step()
                self.elapsed = time.perf_counter() - start
                # rows at display / test_interval boundaries; the last iteration of a run gets one
                # too, without closing the averaging window (so a resumed log matches a straight one)
                regular_test = self.test_interval and self.iter % self.test_interval == 0
                regular = self.iter % self.display == 0 or (self.test_data is not None and regular_test)
                last = self.iter == iters
                if self.test_data is not None and (regular_test or last):
                    self._test_row(lr, reset=regular)
                elif regular or last:
                    self._row(lr=lr, reset=regular)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}", lr=f"{lr:.3g}")
                if self.snapshot_interval and self.snapshot_prefix and self.iter % self.snapshot_interval == 0:
                    self.snapshot(f"{self.snapshot_prefix}_iter_{self.iter}.decaf")
        finally:
            if bar is not None:
                bar.close()
        return self.history

    def _test_row(self, lr=None, reset=True):
        result = self.evaluate()
        row = self._row(result, lr, reset)
        loss = "" if row["loss"] is None else f"train loss {row['loss']:.4f}  acc {row['accuracy']:.4f}  "
        self.log(f"iter {self.iter:>6}  {loss}test loss {result['loss']:.4f}  acc {result['accuracy']:.4f}")

    # ---- snapshots --------------------------------------------------------------------
    def snapshot(self, path):
        """Write the net, solver state, data position and log to ``path`` (atomically)."""
        from .io.netfile import save
        solver_info, solver_arrays = self.solver.state()
        data_info, data_arrays = self.data.state()
        d = self.data
        state = {"iter": self.iter, "solver": self.solver.config(), "solver_state": solver_info,
                 "data": dict(data_info, shuffle=d.shuffle, crop=d.crop, pad=d.pad, mirror=d.mirror),
                 "layer_rngs": {layer.name: layer.rng.bit_generator.state for layer in self.net.order},
                 "history": self.history, "window": self._window, "elapsed": self.elapsed,
                 "settings": {"test_interval": self.test_interval, "display": self.display,
                              "snapshot_interval": self.snapshot_interval}}
        arrays = {f"solver.{k}": v for k, v in solver_arrays.items()}
        arrays.update({f"data.{k}": v for k, v in data_arrays.items()})
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save(self.net, path, labels=self.labels, preprocess=self.preprocess, extra={"train": state},
             extra_arrays=arrays)
        return path

    @classmethod
    def resume(cls, path, data, test_data=None, **kw):
        """A Trainer in the exact state of snapshot ``path``. ``data``: the same training source
        (the iterator is rebuilt from the snapshot's settings) or a Batches configured as before.
        Keyword arguments override the stored settings (test_interval, display, ...)."""
        from .io.netfile import read_netfile
        from .solvers import make_solver
        spec, params, meta, arrays = read_netfile(path)
        state = (meta.get("extra") or {}).get("train")
        if not state:
            raise TrainingError(f"{path}: not a training snapshot (no solver state); to fine-tune a trained "
                                "net, start a new run from it instead")
        net = Net(spec, phase="train", init=False)
        net.load_params(params)
        for layer in net.order:
            if layer.name in state["layer_rngs"]:
                layer.rng.bit_generator.state = state["layer_rngs"][layer.name]
        cfg = dict(state["solver"])
        solver = make_solver(cfg.pop("type"), net, **cfg)
        solver.load_state(state["solver_state"],
                          {k[len("solver."):]: v for k, v in arrays.items() if k.startswith("solver.")})
        ds = state["data"]
        if not isinstance(data, Batches):
            data = Batches(data, ds["batch_size"], shuffle=ds["shuffle"], seed=ds["seed"], crop=ds["crop"],
                           pad=ds["pad"], mirror=ds["mirror"])
        elif data.batch_size != ds["batch_size"]:
            raise TrainingError(f"{path}: the snapshot trained with batch size {ds['batch_size']}, "
                                f"not {data.batch_size}")
        data.set_state(ds, {k[len("data."):]: v for k, v in arrays.items() if k.startswith("data.")})
        settings = dict(state.get("settings", {}), **kw)
        settings.setdefault("labels", meta.get("labels"))
        settings.setdefault("preprocess", meta.get("preprocess"))
        trainer = cls(net, solver, data, test_data, **settings)
        trainer.history = list(state["history"])
        trainer._window = list(state["window"])
        trainer.elapsed = float(state["elapsed"])
        return trainer

    def save_model(self, path):
        """Write the trained net for inference (``deploy_spec``: a Softmax ``prob`` output) to ``path``."""
        from types import SimpleNamespace

        from .io.netfile import save
        deploy = SimpleNamespace(spec=deploy_spec(self.net.spec), params=self.net.params, meta={})
        save(deploy, path, labels=self.labels, preprocess=self.preprocess,
             extra={"trained": {"iter": self.iter, "solver": self.solver.config()}})
        return path


# ---- full batch: L-BFGS --------------------------------------------------------------------

def train_lbfgs(net, data, max_iter=100, weight_decay=0.0, test_data=None, test_interval=0, log=None,
                batch_size=256):
    """Minimise the loss over all of ``data`` with L-BFGS (decaf.solvers.LBFGS); returns the history
    (one row per L-BFGS iteration, ``loss`` the full objective)."""
    from .solvers import LBFGS
    r = roles(net.spec)
    net.set_phase("train")
    skip_frozen_backward(net)
    if not isinstance(data, Batches):
        data = Batches(data, batch_size, shuffle=False)
    check_labels(data.source.labels, num_classes=int(net.blobs[r["scores"]].shape[1]), what="training labels")
    if test_data is not None and not isinstance(test_data, Batches):
        test_data = Batches(test_data, batch_size, shuffle=False, crop=data.crop)
    batches = [{r["data"]: x, r["label"]: y} for x, y in data.eval_batches(batch_size)]
    solver = LBFGS(net, weight_decay=weight_decay, max_iter=max_iter)
    history, start = [], time.perf_counter()
    log = log or (lambda message: None)

    def on_iteration(it, f):
        test = None
        if test_data is not None and (it == max_iter or (test_interval and it % test_interval == 0)):
            test = evaluate(net, test_data, batch_size)
            net.set_phase("train")
            log(f"iter {it:>6}  objective {f:.4f}  test loss {test['loss']:.4f}  acc {test['accuracy']:.4f}")
        history.append({"iter": it, "epoch": it, "lr": None, "loss": f, "accuracy": None,
                        "test_loss": test and test["loss"], "test_accuracy": test and test["accuracy"],
                        "seconds": round(time.perf_counter() - start, 3)})

    result = solver.minimize(batches, on_iteration)
    if test_data is not None and (not history or history[-1]["test_loss"] is None):
        test = evaluate(net, test_data, batch_size)
        history.append({"iter": solver.iter, "epoch": solver.iter, "lr": None, "loss": float(result.fun),
                        "accuracy": None, "test_loss": test["loss"], "test_accuracy": test["accuracy"],
                        "seconds": round(time.perf_counter() - start, 3)})
    return history, solver, result


# ---- logs and the loss curve ---------------------------------------------------------------

LOG_COLUMNS = ("iter", "epoch", "lr", "loss", "accuracy", "test_loss", "test_accuracy", "seconds")


def write_logs(history, out_dir, summary=None):
    """``log.csv`` (one row per history row) and ``log.json`` ({"summary", "history"}) in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "log.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, LOG_COLUMNS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in LOG_COLUMNS})
    with open(os.path.join(out_dir, "log.json"), "w") as f:
        json.dump({"summary": summary or {}, "history": history}, f, indent=1)


def plot_history(history, path, title="training"):
    """The loss curve (train and test loss, test accuracy on a second axis) as a PNG (matplotlib Agg)."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    train = [(r["iter"], r["loss"]) for r in history if r["loss"] is not None]
    test = [(r["iter"], r["test_loss"], r["test_accuracy"]) for r in history if r["test_loss"] is not None]
    if train:
        ax.plot(*zip(*train), color="tab:blue", lw=1.2, label="train loss")
    if test:
        ax.plot([t[0] for t in test], [t[1] for t in test], "o-", color="tab:orange", ms=3, label="test loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (softmax cross-entropy)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if test:
        ax2 = ax.twinx()
        ax2.plot([t[0] for t in test], [100 * t[2] for t in test], "s--", color="tab:green", ms=3,
                 label="test accuracy")
        ax2.set_ylabel("test accuracy (%)")
        ax2.set_ylim(0, 100)
        h2, n2 = ax2.get_legend_handles_labels()
        handles, names = handles + h2, names + n2
    ax.legend(handles, names, loc="center right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
