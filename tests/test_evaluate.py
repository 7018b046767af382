"""decaf evaluate on folders and list files with a net whose answers are known by construction."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

import decaf
from decaf.cli import main
from decaf.evaluate import LabelError, class_matcher, evaluate
from decaf.io.netfile import save
from decaf.recipe import Recipe

LABELS = ["red", "green", "blue", "grey, gray"]


@pytest.fixture(scope="module")
def colour_net(tmp_path_factory):
    """The mean colour decides: logits = 10 * (mean R, G, B in 0..1) and 4 for 'grey', then softmax."""
    spec = {"name": "colours", "inputs": {"data": [3, 8, 8]}, "layers": [
        {"name": "pool", "type": "Pooling", "bottom": "data", "top": "pool", "pool": "ave", "global_pooling": True},
        {"name": "fc", "type": "InnerProduct", "bottom": "pool", "top": "fc", "num_output": 4},
        {"name": "prob", "type": "Softmax", "bottom": "fc", "top": "prob"}]}
    weight = np.zeros((4, 3), np.float32)
    weight[:3] = 10 * np.eye(3)
    net = decaf.Net.from_arrays(spec, {"fc.weight": weight, "fc.bias": np.array([0, 0, 0, 4], np.float32)})
    path = tmp_path_factory.mktemp("net") / "colours.decaf"
    save(net, path, preprocess=Recipe(crop=8, resize_shorter=8, scale=1 / 255, mean=0, std=1), labels=LABELS)
    return path


def image(path, rgb, size=(10, 9)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("val")
    for i in range(3):
        image(d / "Red" / f"r{i}.png", (255, 0, 0))          # case differs from the class name
    (d / "Red" / "broken.jpg").write_bytes(b"not a jpeg")
    image(d / "green" / "g0.png", (0, 255, 0))
    image(d / "green" / "g1.png", (0, 0, 255))                 # predicted blue; green not even 2nd
    image(d / "2" / "b0.png", (0, 0, 255))                     # a class index as the folder name
    image(d / "2" / "b1.png", (0, 255, 128))                   # predicted green; blue 2nd
    return d


def test_folder_accuracy_per_class_and_confusion(colour_net, folder):
    skipped = []
    result = evaluate(decaf.load(colour_net), folder, top_k=2, batch_size=3,
                      on_error=lambda path, message: skipped.append(path))
    assert result["images"] == 8 and result["scored"] == 7
    assert [s["path"] for s in result["skipped"]] == [str(folder / "Red" / "broken.jpg")] == skipped
    assert result["top1"] == pytest.approx(5 / 7) and result["topk"] == pytest.approx(6 / 7)
    per = {c["name"]: (c["label"], c["images"], c["top1"], c["topk"]) for c in result["per_class"]}
    assert per == {"red": ("Red", 3, 1.0, 1.0), "green": ("green", 2, 0.5, 0.5), "blue": ("2", 2, 0.5, 1.0)}
    assert result["mean_class_top1"] == pytest.approx(2 / 3)
    conf = result["confusion"]
    assert conf["classes"] == [0, 1, 2] and conf["columns"] == ["red", "green", "blue", "other"]
    assert conf["matrix"] == [[3, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]]


def test_list_file_indices_and_other_column(colour_net, tmp_path):
    image(tmp_path / "a.png", (255, 0, 0))
    image(tmp_path / "dark.png", (0, 0, 0))          # predicted grey (3), a class not in the data
    image(tmp_path / "sub dir" / "g.png", (0, 255, 0))
    (tmp_path / "val.txt").write_text("a.png 0\ndark.png 0\n# a comment\nsub dir/g.png\t1\n")
    result = evaluate(decaf.load(colour_net), tmp_path / "val.txt", top_k=1)
    assert result["scored"] == 3 and result["top1"] == pytest.approx(2 / 3)
    assert result["confusion"]["matrix"] == [[1, 0, 1], [0, 1, 0]]
    given = evaluate(decaf.load(colour_net), ([tmp_path / "a.png", tmp_path / "dark.png"], ["red", 3]), top_k=1)
    assert given["top1"] == 1.0 and given["confusion"]["classes"] == [0, 3]


def test_class_matching():
    match = class_matcher(["tabby, tabby cat", "crane", "crane", "Egyptian cat"], 4)
    assert match("tabby_cat") == 0 and match("Tabby") == 0 and match("egyptian-cat") == 3 and match("2") == 2
    with pytest.raises(LabelError, match="several classes"):
        match("crane")                                   # ImageNet has two classes named 'crane'
    with pytest.raises(LabelError, match="closest: 'tabby'"):
        match("taby")
    with pytest.raises(LabelError, match="class indices 0..2"):
        class_matcher(None, 3)("cat")


def test_cli_json_csv_png_and_progress(colour_net, folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    code = main(["evaluate", str(colour_net), str(folder), "--top", "2", "--batch", "2", "--json", str(out / "r.json"),
                 "--csv", str(out / "p.csv"), "--confusion", str(out / "c.png")])
    stdout, stderr = capsys.readouterr()
    assert code == 0
    assert "top-1 71.43%   top-2 85.71%" in stdout and "7 images scored, 1 skipped" in stdout
    assert "broken.jpg" in stderr and "evaluate" in stderr and "img" in stderr     # tqdm bar on stderr
    result = json.loads((out / "r.json").read_text())
    assert result["confusion"]["matrix"] == [[3, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0]]
    with open(out / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and sum(int(r["top1_correct"]) for r in rows) == 5
    wrong = [r for r in rows if r["path"].endswith("g1.png")][0]
    assert (wrong["label_name"], wrong["predicted_name"], wrong["top_k"]) == ("green", "blue", "2 3")
    assert (out / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors(colour_net, tmp_path, capsys):
    image(tmp_path / "val" / "purple" / "x.png", (128, 0, 128))
    assert main(["evaluate", str(colour_net), str(tmp_path / "val"), "--quiet"]) == 1
    assert "'purple' matches no class" in capsys.readouterr().err
    (tmp_path / "nolabel.txt").write_text("val/purple/x.png\n")
    assert main(["evaluate", str(colour_net), str(tmp_path / "nolabel.txt"), "--quiet"]) == 1
    assert "has no label" in capsys.readouterr().err
    (tmp_path / "bad.txt").write_text("missing.png 1\n")
    assert main(["evaluate", str(colour_net), str(tmp_path / "bad.txt"), "--quiet"]) == 1   # nothing scored
    out, err = capsys.readouterr()
    assert "0 images scored, 1 skipped" in out and "missing.png" in err
