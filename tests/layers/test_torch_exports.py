"""The layers of issue 12 as PyTorch writes them: each torch module exported to ONNX (opset 13 with a
dynamic batch, opset 17 static), imported by decaf and compared with PyTorch itself, then written
back out by decaf and compared with ONNX Runtime. Skipped without torch; marked slow (importing
torch takes seconds): `pytest -m slow tests/layers/test_torch_exports.py`."""
import functools
import warnings

import numpy as np
import pytest

from layer_checks import import_net, run_ort

pytestmark = pytest.mark.slow
NAMES = ["deconv", "elu", "gelu", "gelu_tanh", "hardsigmoid", "hardswish", "layernorm2d", "layernorm_last", "logsoftmax", "mish",
         "prelu", "prelu_shared", "selu", "silu", "softplus"]


@functools.cache
def _modules():
    """{name: (torch module, the decaf types it must import as, or None for a chain of several)}."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from torch import nn

    class LayerNorm2d(nn.LayerNorm):
        """ConvNeXt's: a LayerNorm over the channels of (N, C, H, W), written with permutes."""

        def forward(self, x):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    torch.manual_seed(0)
    deconv = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1, groups=1)
    prelu = nn.PReLU(3)
    with torch.no_grad():
        prelu.weight.uniform_(-0.5, 0.5)
    ln = nn.LayerNorm([4, 5])
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    modules = {
        "gelu": (nn.GELU(), None), "gelu_tanh": (nn.GELU(approximate="tanh"), None), "silu": (nn.SiLU(), None),
        "hardsigmoid": (nn.Hardsigmoid(), {"HardSigmoid"}), "hardswish": (nn.Hardswish(), {"HardSwish"}),
        "mish": (nn.Mish(), {"Mish"}),
        "prelu": (prelu, {"PReLU"}), "prelu_shared": (nn.PReLU(), {"PReLU"}),
        "layernorm_last": (ln, None), "layernorm2d": (LayerNorm2d(3), None),
        "deconv": (deconv, {"Deconvolution"}), "logsoftmax": (nn.LogSoftmax(dim=1), {"LogSoftmax"}),
        "softplus": (nn.Softplus(), {"Softplus"}), "elu": (nn.ELU(0.7), {"ELU"}), "selu": (nn.SELU(), {"SELU"}),
    }
    assert sorted(modules) == NAMES
    return modules


# PyTorch writes LayerNorm as ReduceMean, Sub, Pow, ... before opset 17: that chain is the graph
# importer's (Arithmetic's Pow), not a LayerNorm
CHAIN_BEFORE_17 = {"layernorm_last", "layernorm2d"}


@pytest.mark.parametrize("opset,dynamic", [(13, True), (17, False)], ids=["opset13-dynamic", "opset17-static"])
@pytest.mark.parametrize("name", NAMES)
def test_torch_export_imports_and_exports_back(tmp_path, name, opset, dynamic):
    import torch
    module, types = _modules()[name]
    module.eval()
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(1)) * 2
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=opset,
                          dynamo=False, dynamic_axes={"x": {0: "N"}, "y": {0: "N"}} if dynamic else None)
    try:
        net, spec = import_net(path)
    except Exception as exc:
        if name in CHAIN_BEFORE_17 and opset < 17:
            pytest.xfail(f"PyTorch's opset-{opset} LayerNorm chain: {exc}")
        raise
    if types is not None:
        assert {layer["type"] for layer in spec["layers"]} == types
    with torch.no_grad():
        expected = module(x).numpy()
    ours = net.forward(x=x.numpy())["y"]
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(expected).max()))
    from decaf.io.onnx_convert import net_to_onnx
    net_to_onnx(net, tmp_path / "back.onnx")
    (theirs,) = run_ort(tmp_path / "back.onnx", {"x": x.numpy()})
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(expected).max()))
