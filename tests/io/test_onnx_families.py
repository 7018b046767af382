"""Every ImageNet CNN family (tests/onnx_families.py: tiny torchvision-style definitions) exported
by PyTorch (``torch.onnx.export(..., dynamo=False)``), imported by decaf and checked against ONNX
Runtime: logits within 1e-4 of the largest one and the same top 5; the input gradient of
sum(w * logits) equal to PyTorch's and one SGD step on the imported weights lowering that sum
(fine-tuning works through every layer); decaf's own export back out matching ONNX Runtime.

The default run checks each family at one of the four (opset, batch) combinations, rotating so
all four are covered; ``pytest -m slow`` runs the whole matrix (opsets 13 and 17, static and
dynamic batch) and writes the table in docs/import.md when DECAF_WRITE_IMPORT_TABLE=1. Every run
checks that the table agrees with what it measured.
"""
import io
import os
import pathlib
import sys

import numpy as np
import pytest

import decaf

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from onnx_families import FAMILIES, build  # noqa: E402

from decaf.io.onnx_convert import net_to_onnx, onnx_to_net  # noqa: E402

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "import.md"
BEGIN, END = "<!-- import-table: begin (written by tests/io/test_onnx_families.py) -->", "<!-- import-table: end -->"
COMBOS = [(13, False), (17, True), (13, True), (17, False)]          # (opset, dynamic batch)
NAMES = list(FAMILIES)
DEFAULT = [(name, *COMBOS[i % len(COMBOS)]) for i, name in enumerate(NAMES)]
FULL = [(name, opset, dyn) for name in NAMES for opset, dyn in COMBOS]
RTOL = 1e-4


def _session(path_or_bytes):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path_or_bytes, options, providers=["CPUExecutionProvider"])


def export(model, shape, opset, dynamic):
    buf = io.BytesIO()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros((2,) + shape), buf, opset_version=opset, dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}} if dynamic else None)
    return buf.getvalue()


def top5(y):
    return np.argsort(-y, axis=1, kind="stable")[:, :5]


def check_family(name, opset, dynamic, tmp_path):
    """Import and check one (family, opset, batch) combination; returns the decaf layer types."""
    model, shape = build(name)
    path = tmp_path / f"{name.replace(' ', '_')}-{opset}-{dynamic}.onnx"
    path.write_bytes(export(model, shape, opset, dynamic))
    spec, arrays = onnx_to_net(path)
    net = decaf.Net.from_arrays(spec, arrays)
    batch = 3 if dynamic else 2                       # a dynamic export must take another batch size
    x = np.random.default_rng(len(name)).standard_normal((batch,) + shape).astype(np.float32)

    # forward: ONNX Runtime on the same file
    (theirs,) = _session(str(path)).run(["y"], {"x": x})
    ours = net.forward(x=x)["y"]
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() <= RTOL * scale, f"{name}: logits differ from ONNX Runtime"
    assert np.array_equal(top5(ours), top5(theirs)), f"{name}: top-5 differs from ONNX Runtime"

    # backward: d sum(w * logits) / dx against PyTorch's autograd, then one SGD step lowers the sum
    w = np.random.default_rng(1).standard_normal(ours.shape).astype(np.float32)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    (model(xt) * torch.from_numpy(w)).sum().backward()
    net.force_backward = True
    net.forward(x=x)
    grads = net.backward({"y": w})
    ref = xt.grad.numpy()
    assert np.abs(grads["x"] - ref).max() <= 1e-3 * np.abs(ref).max(), f"{name}: input gradient differs"
    before = float(np.sum(w * ours))
    trained = [p for p in net.params.values() if p.learnable]
    assert trained and all(np.all(np.isfinite(p.diff)) for p in trained)
    norm = np.sqrt(sum(float(np.sum(p.diff.astype(np.float64) ** 2)) for p in trained))
    for p in trained:
        p.data -= (1e-3 * abs(before) / max(norm ** 2, 1e-12)) * p.diff     # a step of 1e-3 of the objective
    after = float(np.sum(w * net.forward(x=x)["y"]))
    assert after < before, f"{name}: an SGD step on the imported weights did not lower the objective"

    # decaf's own export of the imported (and stepped) net, back through ONNX Runtime
    back = tmp_path / "back.onnx"
    net_to_onnx(net, back, opset=opset)
    (again,) = _session(str(back)).run(["y"], {"x": x})
    now = net.forward(x=x)["y"]
    assert np.abs(now - again).max() <= RTOL * np.abs(again).max(), f"{name}: decaf's export differs"
    return sorted({layer["type"] for layer in spec["layers"]})


RESULTS = {}


def _run(name, opset, dynamic, tmp_path):
    try:
        RESULTS[(name, opset, dynamic)] = ("yes", check_family(name, opset, dynamic, tmp_path))
    except decaf.io.errors.DecafFormatError as exc:
        RESULTS[(name, opset, dynamic)] = ("refused", str(exc).split(": ", 1)[-1])
        raise


@pytest.mark.parametrize("name, opset, dynamic", DEFAULT, ids=[f"{n}-{o}-{'dyn' if d else 'static'}" for n, o, d in DEFAULT])
def test_family(name, opset, dynamic, tmp_path):
    _run(name, opset, dynamic, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name, opset, dynamic", FULL, ids=[f"{n}-{o}-{'dyn' if d else 'static'}" for n, o, d in FULL])
def test_family_full_matrix(name, opset, dynamic, tmp_path):
    if (name, opset, dynamic) not in RESULTS:
        _run(name, opset, dynamic, tmp_path)


def table(results):
    """The Markdown table of docs/import.md from the results of every combination."""
    head = ["Family", "decaf layer types (opset 13, static)"] + [f"opset {o}, {'dynamic' if d else 'static'} batch" for o, d in COMBOS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in NAMES:
        kinds = results[(name, COMBOS[0][0], COMBOS[0][1])][1]
        cells = [results[(name, o, d)][0] for o, d in COMBOS]
        lines.append(f"| {name} | {', '.join(kinds) if isinstance(kinds, list) else '-'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def documented():
    text = DOC.read_text()
    assert BEGIN in text and END in text, f"{DOC} has no generated table"
    body = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    rows = {}
    for line in body.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells
    return text, body, rows


def test_import_table_in_docs_agrees():
    """Runs after the family tests: every combination this run measured is what docs/import.md says;
    with every combination measured (pytest -m slow) and DECAF_WRITE_IMPORT_TABLE=1, rewrite it."""
    measured = {k: v for k, v in RESULTS.items()}
    if not measured:
        pytest.skip("no family test ran in this session")
    if all(k in measured for k in FULL):
        new = table(measured)
        if os.environ.get("DECAF_WRITE_IMPORT_TABLE") == "1":
            text = DOC.read_text()
            head, rest = text.split(BEGIN, 1)
            DOC.write_text(head + BEGIN + "\n" + new + "\n" + END + rest.split(END, 1)[1])
        _, body, _ = documented()
        assert body == new, "docs/import.md's table is stale: run DECAF_WRITE_IMPORT_TABLE=1 pytest -m slow " \
                            "tests/io/test_onnx_families.py"
    _, _, rows = documented()
    for (name, opset, dyn), (status, kinds) in measured.items():
        cells = rows[name]
        assert cells[2 + COMBOS.index((opset, dyn))] == status, (name, opset, dyn, status)
        if COMBOS.index((opset, dyn)) == 0 and status == "yes":
            assert cells[1] == ", ".join(kinds), (name, cells[1], kinds)
