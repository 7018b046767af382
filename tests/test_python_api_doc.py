"""docs/python-api.md runs: its ```python blocks, in order, in one namespace, in a folder holding
scikit-image's photos (photos/chelsea.png, photos/coffee.png), with the pretrained net.

The GridSearchCV block runs EfficientNet-Lite0 on ~60 images (about 15 s on two cores): it runs
in the slow test only (pytest -m slow); tests/test_sklearn.py checks the same API on a tiny net."""
import pathlib
import re
import shutil

import pytest

PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def python_blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def run_page(tmp_path, monkeypatch, photos, skip_slow):
    pytest.importorskip("sklearn")
    shutil.copytree(photos, tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(PAGE.read_text())
    assert len(blocks) == 6
    namespace = {}
    for i, code in enumerate(blocks):
        assert "assert" in code, f"block {i} asserts nothing"
        if skip_slow and "GridSearchCV" in code:
            continue
        exec(compile(code, f"{PAGE.name} block {i}", "exec"), namespace)


def test_python_api_page_runs(pretrained_file, photos, tmp_path, monkeypatch):
    run_page(tmp_path, monkeypatch, photos, skip_slow=True)


@pytest.mark.slow
def test_python_api_page_runs_whole(pretrained_file, photos, tmp_path, monkeypatch):
    run_page(tmp_path, monkeypatch, photos, skip_slow=False)
