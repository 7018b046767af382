"""examples/two_layer_net.py runs and does what its docstring says."""
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_two_layer_net_example():
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "two_layer_net.py")], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # 1. the gradient-check table
    table = [line for line in out.splitlines() if line.startswith(("ok ", "FAIL "))]
    assert [line.split()[2] for line in table] == ["x", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert all(line.startswith("ok ") for line in table)
    # 2. the loss goes down
    losses = [float(v) for v in re.findall(r"epochs\s+loss (\d+\.\d+)", out)]
    assert len(losses) >= 5 and losses[-1] < 0.25 * losses[0]
    assert all(b < a for a, b in zip(losses, losses[1:]))
    # 3. each layer's backward, from the loss down
    order = re.findall(r"^-- (\w+) \((\w+)\)\.backward", out, re.M)
    assert order == [("loss", "SoftmaxWithLoss"), ("fc2", "InnerProduct"), ("relu1", "ReLU"),
                     ("fc1", "InnerProduct")]
    assert "d fc2.weight (3, 64)" in out and "d scores (4, 3)" in out
    assert "summary: gradient check passed" in out
