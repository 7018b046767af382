"""A two-layer net, start to finish, in well under a minute.

    python examples/two_layer_net.py

1. Build it: x (2 numbers) -> InnerProduct(64) -> ReLU -> InnerProduct(3) -> SoftmaxWithLoss.
2. Check its gradient against finite differences (the table decaf gradcheck prints).
3. Train it on three interleaved spirals with plain minibatch SGD written out in a few lines,
   printing the loss as it goes down.
4. Run one backward pass on four examples and print what each layer's backward produced, in
   the order the net runs them (loss first, inputs last).
"""
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))   # run from a checkout

import decaf  # noqa: E402
from decaf.gradcheck import check_net  # noqa: E402

SPEC = {
    "name": "two_layer_net",
    "inputs": {"x": [2], "label": []},
    "layers": [
        {"name": "fc1", "type": "InnerProduct", "bottom": "x", "top": "fc1", "num_output": 64,
         "weight_filler": {"type": "msra"}},
        {"name": "relu1", "type": "ReLU", "bottom": "fc1", "top": "fc1"},      # in place
        {"name": "fc2", "type": "InnerProduct", "bottom": "fc1", "top": "scores", "num_output": 3},
        {"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["scores", "label"], "top": "loss"},
    ],
}


def spirals(per_class=100, classes=3, seed=0):
    """Three spiral arms in the plane, one per class: not separable by a line."""
    rng = np.random.default_rng(seed)
    x, y = [], []
    for c in range(classes):
        r = np.linspace(0.05, 1.0, per_class)
        theta = np.linspace(c * 4.0, (c + 1) * 4.0, per_class) + rng.normal(0, 0.2, per_class)
        x.append(np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1))
        y.append(np.full(per_class, c))
    return np.concatenate(x).astype(np.float32), np.concatenate(y).astype(np.float32)


def gradient_check(x, y):
    print("== 1. gradient check (a fresh copy of the net, in float64) ==")
    report = check_net(decaf.Net(SPEC, seed=0), {"x": x[:8], "label": y[:8]})
    print(report)
    print("PASS" if report.passed else "FAIL")
    return report.passed


def train(net, x, y, epochs=300, batch=30, lr=0.2):
    """Plain minibatch SGD: forward, backward, then p.data -= lr * p.diff for every parameter."""
    print("\n== 2. training with plain SGD ==")
    rng = np.random.default_rng(0)
    history = []

    def evaluate(epoch):
        net.forward(x=x, label=y)       # the whole set, test phase
        accuracy = float(np.mean(net.blobs["scores"].data.argmax(axis=1) == y))
        history.append(net.loss())
        print(f"after {epoch:>3} epochs  loss {history[-1]:.4f}  accuracy {accuracy:.1%}")
        return accuracy

    accuracy = evaluate(0)
    for epoch in range(1, epochs + 1):
        net.set_phase("train")          # (no dropout here, but this is where it would switch on)
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            net.forward(x=x[idx], label=y[idx])
            net.backward()
            for p in net.params.values():
                p.data -= lr * p.diff
        net.set_phase("test")
        if epoch % 30 == 0:
            accuracy = evaluate(epoch)
    return history, accuracy


def show_backward(net, x, y):
    """Wrap every layer's backward so that it prints what it wrote, then run one backward."""
    print("\n== 3. one backward pass on 4 examples, layer by layer (reverse order) ==")
    np.set_printoptions(precision=4, suppress=True, linewidth=100)

    def recorder(layer):
        run = layer.backward

        def backward(top, propagate_down, bottom):
            run(top, propagate_down, bottom)
            print(f"-- {layer.name} ({layer.type_name}).backward")
            for blob, down in zip(bottom, propagate_down):
                if down:
                    d = blob.diff
                    zeros = f", {np.mean(d == 0):.0%} zeros" if layer.type_name == "ReLU" else ""
                    print(f"   d {blob.name} {d.shape}{zeros}:\n{_head(d)}")
            for p in layer.blobs:
                print(f"   d {p.name} {p.diff.shape}, norm {np.linalg.norm(p.diff):.4f}:\n{_head(p.diff)}")
        return backward

    for layer in net.order:
        layer.backward = recorder(layer)
    pick = [0, 100, 200, 299]
    net.forward(x=x[pick], label=y[pick])
    print(f"loss {net.loss():.4f}; labels {y[pick].astype(int)}; "
          f"softmax\n{_head(net.layers['loss'].prob)}")
    net.backward()
    for layer in net.order:
        del layer.backward           # back to the class's method


def _head(a, rows=4, cols=6):
    """The top-left corner of an array, indented."""
    a = np.atleast_2d(a)
    text = np.array2string(a[:rows, :cols])
    more = " ..." if a.shape[0] > rows or a.shape[1] > cols else ""
    return "\n".join("     " + line for line in text.splitlines()) + more


def main():
    x, y = spirals()
    ok = gradient_check(x, y)
    net = decaf.Net(SPEC, seed=0)
    history, accuracy = train(net, x, y)
    show_backward(net, x, y)
    went_down = history[-1] < 0.5 * history[0]
    print(f"\nsummary: gradient check {'passed' if ok else 'FAILED'}; loss {history[0]:.3f} -> "
          f"{history[-1]:.3f}; training accuracy {accuracy:.1%}")
    return 0 if ok and went_down else 1


if __name__ == "__main__":
    sys.exit(main())
