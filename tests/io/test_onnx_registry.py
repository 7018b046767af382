"""The ONNX mappings live with the layers: every layer type exports (checked against ONNX Runtime) or
refuses by name, the importer registry covers exactly the operators onnx_convert documents, and the
layer modules reach the converters only through their contexts' public API."""
import inspect
import re

import numpy as np
import pytest

import decaf
import decaf.layers
from decaf.interop import ONNX_IMPORTERS
from decaf.layer import LAYERS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from decaf.io import onnx_convert  # noqa: E402
from decaf.io.onnx_convert import GRAPH_OPS, net_to_onnx, onnx_to_net  # noqa: E402

RTOL = 1e-4
DEFAULT_BOTTOM = (2, 3, 4, 5)

# Variants beyond each type's gradcheck_case, for the branches of to_onnx that it would miss
EXTRA_CASES = [
    ("Eltwise", {"operation": "prod"}, [DEFAULT_BOTTOM] * 3),
    ("Eltwise", {"operation": "max"}, [DEFAULT_BOTTOM] * 2),
    ("Eltwise", {"coeff": [0.5, -2.0]}, [DEFAULT_BOTTOM] * 2),
    ("Pooling", {"pool": "ave", "kernel_size": 3, "stride": 2, "pad": 1, "count_include_pad": False},
     [(2, 3, 8, 8)]),
    ("Pooling", {"pool": "max", "global_pooling": True}, [(2, 3, 5, 5)]),
    ("Convolution", {"num_output": 4, "kernel_size": 3, "stride": 2, "pad_mode": "same_upper"}, [(1, 2, 7, 8)]),
    ("Convolution", {"num_output": 4, "kernel_size": 3, "group": 4, "pad": [0, 1, 1, 2], "bias_term": False},
     [(1, 4, 6, 6)]),
    ("Scale", {}, [DEFAULT_BOTTOM]),
    ("Clip", {"min": -0.5, "max": 0.25}, [DEFAULT_BOTTOM]),
    ("BatchNorm", {}, [DEFAULT_BOTTOM]),
]


def _case(type_name):
    cls = LAYERS[type_name]
    if cls.gradcheck_case is not None:
        params, shapes = cls.gradcheck_case
        return dict(params), [tuple(s) for s in shapes]
    lo = cls.n_bottom if isinstance(cls.n_bottom, int) else max(cls.n_bottom[0], 2)
    return {}, [DEFAULT_BOTTOM] * lo


def _one_layer_net(type_name, params, shapes):
    cls = LAYERS[type_name]
    n_top = cls.n_top if isinstance(cls.n_top, int) else max(cls.n_top[0], 2)
    inputs = {f"x{i}": list(s[1:]) for i, s in enumerate(shapes)}
    tops = [f"y{i}" for i in range(n_top)]
    layer = {"name": "the_layer", "type": type_name, "bottom": list(inputs), "top": tops, **params}
    net = decaf.Net({"name": "one", "inputs": inputs, "layers": [layer]}, seed=5)
    rng = np.random.default_rng(6)
    arrays = {k: (rng.uniform(0.5, 1.5, v.shape) if k.endswith(".var") else rng.standard_normal(v.shape))
              for k, v in net.param_arrays().items()}
    net.load_params({k: v.astype(np.float32) for k, v in arrays.items()})
    return net, tops, rng


def _export_and_compare(tmp_path, type_name, params, shapes):
    """Export the one-layer net, or return the refusal's message; compare with ORT when exported."""
    net, tops, rng = _one_layer_net(type_name, params, shapes)
    path = tmp_path / f"{type_name}.onnx"
    try:
        net_to_onnx(net, path, extra_outputs=tops)
    except ValueError as exc:
        return str(exc)
    feeds = {f"x{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    ours = net.forward(feeds, outputs=tops)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    theirs = dict(zip(names, session.run(names, feeds)))
    for top in tops:
        # a Split's tops are its bottom, so ONNX has no tensor of their own: they are the input
        expected = theirs.get(top, feeds.get("x0") if "split" in LAYERS[type_name].roles else None)
        assert expected is not None, f"{type_name}: {top!r} is not a graph output ({names})"
        err = np.max(np.abs(ours[top] - expected)) / max(np.max(np.abs(expected)), 1e-30)
        assert err <= RTOL, f"{type_name} {params}: {top} differs from ONNX Runtime by {err:.2e}"
    return None


@pytest.mark.parametrize("type_name", sorted(LAYERS))
def test_every_layer_type_exports_or_refuses_by_name(tmp_path, type_name):
    params, shapes = _case(type_name)
    refusal = _export_and_compare(tmp_path, type_name, params, shapes)
    if refusal is not None:
        assert "'the_layer'" in refusal and repr(type_name) in refusal and "cannot be exported" in refusal
        # today only losses have no ONNX form; a new type without to_onnx shows up here first
        assert LAYERS[type_name].is_loss, f"{type_name} refuses ONNX export: {refusal}"


@pytest.mark.parametrize("type_name, params, shapes", EXTRA_CASES,
                         ids=[f"{t}-{'-'.join(map(str, p.values())) or 'default'}" for t, p, _ in EXTRA_CASES])
def test_export_variants_match_onnx_runtime(tmp_path, type_name, params, shapes):
    assert _export_and_compare(tmp_path, type_name, params, shapes) is None


def test_exported_variants_import_back_to_the_same_types(tmp_path):
    """Export then import: each decaf type comes back as itself, except for the forms ONNX has no
    single op for (Scale is written as Mul + Add, an Eltwise coefficient as a Mul)."""
    for type_name, params, shapes in EXTRA_CASES:
        net, tops, _ = _one_layer_net(type_name, params, shapes)
        path = tmp_path / f"{type_name}.onnx"
        net_to_onnx(net, path)
        spec, _ = onnx_to_net(path)
        types = {layer["type"] for layer in spec["layers"]}
        if type_name == "Scale":
            assert types == {"Scale"}, (type_name, params, types)   # Mul, then Add: two Scales
        elif type_name == "Eltwise" and params.get("coeff"):
            assert types == {"Scale", "Eltwise"}, (params, types)    # c * x as a Scale, then the sum
        else:
            assert types == {type_name}, (type_name, params, types)


def _documented_ops():
    """{op: module} from the operator table in onnx_convert's docstring (an RST simple table)."""
    lines = onnx_convert.__doc__.split("\n")
    edges = [i for i, line in enumerate(lines) if re.fullmatch(r"=+( +=+)+", line)]
    columns = [m.start() for m in re.finditer("=+", lines[edges[0]])]
    ops, module = {}, None
    for row in lines[edges[0] + 1:edges[1]]:
        module = row[columns[2]:].strip() or module          # a continued row keeps its module
        for op in re.findall(r"\b[A-Z][A-Za-z]+\b", re.sub(r"\[.*?\]", "", row[:columns[1]])):
            ops[op] = module
    return ops


def test_the_documented_table_has_no_stale_row():
    """Every op in onnx_convert's table is registered, by the module the table names (a new op
    needs no row: supported_ops() describes it from its importer's docstring)."""
    documented = _documented_ops()
    assert len(documented) > 20, documented
    assert set(documented) - GRAPH_OPS <= set(ONNX_IMPORTERS), set(documented) - GRAPH_OPS - set(ONNX_IMPORTERS)
    for op, module in documented.items():
        if op in GRAPH_OPS:
            assert module == "(here)"
        else:
            assert ONNX_IMPORTERS[op].__module__ == f"decaf.layers.{module}", (op, ONNX_IMPORTERS[op].__module__)


def test_every_registered_op_is_described():
    """supported_ops(): every registered op and the graph-level ones, each with its module and a
    description from the table or from its importer's docstring."""
    ops = onnx_convert.supported_ops()
    assert set(ops) == set(ONNX_IMPORTERS) | set(GRAPH_OPS)
    undocumented = sorted(op for op, (_, text) in ops.items() if not text)
    assert undocumented == [], f"document these ops (a table row or the importer's docstring): {undocumented}"
    for op, (module, _) in ops.items():
        if op not in GRAPH_OPS:
            assert ONNX_IMPORTERS[op].__module__ == f"decaf.layers.{module}"
    assert ops["Conv"][1].startswith("Convolution: 2-D")
    assert ops["ReduceSum"] == ("reduce", "Reduce over non-batch axes (axes as attribute or input, keepdims)")


def test_a_new_op_is_described_by_its_importer_alone(monkeypatch):
    """What a layer module adding an op does: register an importer with a docstring; nothing else."""
    def _importer(imp, node):
        """Frobnicate (a decaf layer of a test)."""
    _importer.__module__ = "decaf.layers.frobnicate"
    monkeypatch.setitem(ONNX_IMPORTERS, "Frobnicate", _importer)
    assert onnx_convert.supported_ops()["Frobnicate"] == ("frobnicate", "Frobnicate (a decaf layer of a test).")


def test_layer_modules_use_only_the_public_context_api():
    """Layers are low and io is high: no onnx or decaf.io import, and no private context member."""
    modules = {m.__name__: inspect.getsource(m) for m in {inspect.getmodule(c) for c in LAYERS.values()}}
    for name, source in modules.items():
        assert not re.search(r"^\s*(import onnx|from onnx|from \.\.io|import decaf\.io|from decaf\.io)", source,
                             re.M), name
        assert not re.search(r"\b(imp|g)\._", source), f"{name} uses a private member of a converter context"
    public = {n for n in dir(onnx_convert.OnnxImporter) if not n.startswith("_")}
    assert {"add", "attrs", "const", "need_const", "fail", "shape", "same_as"} <= public
