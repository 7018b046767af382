"""decaf classify with directories and list files, --csv, and the result's notebook/REPL reprs."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

import decaf
from decaf.classify import ClassifyResults, classify
from decaf.cli import main
from decaf.io.netfile import save
from decaf.recipe import Recipe


@pytest.fixture(scope="module")
def colour_net(tmp_path_factory):
    """logits = 10 * mean (R, G, B) in 0..1: the dominant colour wins."""
    spec = {"name": "colours", "inputs": {"data": [3, 8, 8]}, "layers": [
        {"name": "pool", "type": "Pooling", "bottom": "data", "top": "pool", "pool": "ave", "global_pooling": True},
        {"name": "fc", "type": "InnerProduct", "bottom": "pool", "top": "fc", "num_output": 3},
        {"name": "prob", "type": "Softmax", "bottom": "fc", "top": "prob"}]}
    net = decaf.Net.from_arrays(spec, {"fc.weight": 10 * np.eye(3, dtype=np.float32), "fc.bias": np.zeros(3, np.float32)})
    path = tmp_path_factory.mktemp("net") / "colours.decaf"
    save(net, path, preprocess=Recipe(crop=8, resize_shorter=8, scale=1 / 255, mean=0, std=1),
         labels=["red", "green", "<blue>"])
    return path


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    Image.new("RGB", (9, 12), (250, 0, 0)).save(d / "a.png")
    Image.new("RGB", (12, 9), (0, 0, 250)).save(d / "sub" / "b.jpg")
    (d / "c.png").write_bytes(b"broken")
    (d / "notes.md").write_text("not an image: not collected")
    return d


def test_directory_and_csv(colour_net, photos, tmp_path, capsys):
    code = main(["classify", str(photos), "--model", str(colour_net), "--top", "2", "--csv", str(tmp_path / "p.csv")])
    out, err = capsys.readouterr()
    assert code == 0
    assert "skipped" in err and "c.png" in err
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(photos / n) for n in ("a.png", "c.png", "sub/b.jpg")]
    assert (rows[0]["name_1"], rows[2]["name_1"], rows[2]["index_1"]) == ("red", "<blue>", "2")
    assert rows[1]["error"] and rows[1]["name_1"] == ""
    assert abs(float(rows[0]["prob_1"]) + float(rows[0]["prob_2"]) - 1) < 1e-4   # 3 classes, red ~1, then ~0
    assert list(rows[0]) == ["path", "error", "index_1", "name_1", "prob_1", "index_2", "name_2", "prob_2"]


def test_list_file(colour_net, photos, tmp_path, capsys):
    (tmp_path / "list.txt").write_text("photos/sub/b.jpg 7\nphotos/a.png\n")
    assert main(["classify", str(tmp_path / "list.txt"), "--model", str(colour_net), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["top"][0]["name"] for r in results] == ["<blue>", "red"]


def test_empty_directory_is_an_error(colour_net, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["classify", str(tmp_path / "empty"), "--model", str(colour_net)]) == 1
    assert "no images found" in capsys.readouterr().err


def test_reprs(colour_net, photos):
    results = classify(decaf.load(colour_net), [photos / "a.png", photos / "c.png",
                                                np.full((8, 8, 3), (0, 250, 0), np.uint8)], top=3)
    assert isinstance(results, ClassifyResults) and isinstance(results, list)
    assert json.loads(json.dumps(results))[0]["top"][0]["name"] == "red"
    text = repr(results)
    assert "ClassifyResults: 3 image(s)" in text and "red" in text and "error:" in text and "<ndarray>" in text
    page = results._repr_html_()
    assert page.startswith("<table>") and page.count("<tr>") == 4      # a header and one row per image
    assert "&lt;ndarray&gt;" in page and "&lt;blue&gt;" in page and "<blue>" not in page     # names are escaped
