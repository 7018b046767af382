"""decaf.featstore: Zarr v3 feature stores (local folders and fsspec URLs), read lazily, as the .npz reads.

The checks against the .npz come from the same process and thread count, so the features must be equal
bit for bit; the store's layout is also read with zarr itself (an independent reader).
"""
import json
import os

import numpy as np
import pytest
from PIL import Image

zarr = pytest.importorskip("zarr")
pytest.importorskip("dask")

from decaf import Net  # noqa: E402
from decaf.cli import main  # noqa: E402
from decaf.features import OutputLocked, extract, load_features, open_features, output_lock  # noqa: E402
from decaf.featstore import export_npy, is_store, iter_chunks  # noqa: E402
from decaf.transfer import load_feature_set  # noqa: E402

TINY = {"name": "tiny", "inputs": {"data": [3, 16, 16]}, "layers": [
    {"name": "conv1", "type": "Convolution", "bottom": "data", "top": "conv1", "num_output": 4, "kernel_size": 3},
    {"name": "relu1", "type": "ReLU", "bottom": "conv1", "top": "relu1"},
    {"name": "pool1", "type": "Pooling", "bottom": "relu1", "top": "pool1", "pool": "max", "kernel_size": 2,
     "stride": 2},
    {"name": "fc1", "type": "InnerProduct", "bottom": "pool1", "top": "fc1", "num_output": 8},
    {"name": "relu2", "type": "ReLU", "bottom": "fc1", "top": "relu2"}]}
BROKEN = ["cats/broken.jpg", "dogs/truncated.png"]


def tiny_net():
    net = Net(TINY, seed=3)
    net.meta = {"preprocess": {"resize_shorter": 18, "crop": 16}}
    return net


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """cats/ and dogs/ with 10 + 9 small images and two broken files (in different shards of 6)."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(19):
        cls = "cats" if i < 10 else "dogs"
        (root / cls).mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20 + i, 18 + i % 5, 3), dtype=np.uint8)).save(root / cls / f"{i:02d}.png")
    (root / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    good = (root / "dogs" / "12.png").read_bytes()
    (root / "dogs" / "truncated.png").write_bytes(good[:len(good) // 2])
    return root


@pytest.fixture(scope="module")
def npz(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("npz") / "f.npz"
    extract(tiny_net(), folder, blobs=["fc1", "pool1"], batch_size=4, shard_size=6, out=out)
    return out


def assert_same(store, npz):
    a, b = load_features(store), load_features(npz)
    assert sorted(a) == sorted(b)
    for key in a:
        if key in ("info", "root"):
            assert a[key] == b[key]
        else:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            assert np.array_equal(a[key], b[key]), key


def test_is_store():
    assert is_store("f.zarr") and is_store("s3://bucket/f") and is_store("memory://f.zarr")
    assert not is_store("f.npz") and not is_store("feats")


def test_store_holds_what_the_npz_holds_and_reads_lazily(folder, npz, tmp_path):
    out = tmp_path / "f.zarr"
    stats = {}
    result = extract(tiny_net(), folder, blobs=["fc1", "pool1"], batch_size=4, shard_size=6, out=out, stats=stats)
    assert stats["extracted"] == 19 and stats["skipped"] == 2 and stats["shards"] == 4
    assert_same(out, npz)
    ref = load_features(npz)
    # lazy: Dask arrays, one chunk per shard, nothing read until computed
    lazy = open_features(out)
    assert type(lazy["fc1"]).__module__.startswith("dask") and type(result["fc1"]).__module__.startswith("dask")
    assert lazy["fc1"].shape == (19, 8) and np.array_equal(lazy["fc1"].compute(), ref["fc1"])
    assert np.array_equal(lazy["pool1"][5:9].compute(), ref["pool1"][5:9])
    # a NumPy memmap, through one .npy copy made shard by shard
    mapped = export_npy(out, "pool1", tmp_path / "pool1.npy")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, ref["pool1"])
    from decaf.io.blobfile import _current_umask
    assert (tmp_path / "pool1.npy").stat().st_mode & 0o777 == 0o666 & ~_current_umask()   # not mkstemp's 0600
    # one shard at a time
    chunks = list(iter_chunks(out, "fc1"))
    assert len(chunks) == 4 and all(len(X) <= 6 for X, _ in chunks)
    assert np.array_equal(np.concatenate([X for X, _ in chunks]), ref["fc1"])
    assert list(np.concatenate([y for _, y in chunks])) == list(ref["labels"])
    # the layout, read with zarr: one row per listed image, zero rows for the skipped ones
    group = zarr.open_group(str(out), mode="r")
    paths = [str(p) for p in group["items/path"][:]]
    assert len(paths) == 21 and group["features/fc1"].chunks == (6, 8)
    bad = [paths.index(p) for p in BROKEN]
    assert sorted(group["skipped/index"][:].tolist()) == sorted(bad)
    assert not group["features/fc1"][:][bad].any()
    assert group.attrs["decaf_features"]["complete"] is True
    assert not os.path.exists(tmp_path / ".f.zarr.lock")


class Killed(Exception):
    pass


def die_after(n):
    def on_shard(k, total):
        if k == n:
            raise Killed
    return on_shard


@pytest.mark.parametrize("where", ["folder", "memory"])
def test_interrupted_store_is_refused_then_resumed(folder, npz, tmp_path, where):
    out = str(tmp_path / "r.zarr") if where == "folder" else f"memory://{tmp_path.name}/r.zarr"
    with pytest.raises(Killed):
        extract(tiny_net(), folder, blobs=["fc1", "pool1"], batch_size=4, shard_size=6, out=out,
                on_shard=die_after(2))
    with pytest.raises(ValueError, match="not complete"):
        load_features(out)
    skipped, stats = [], {}
    extract(tiny_net(), folder, blobs=["fc1", "pool1"], batch_size=4, shard_size=6, out=out, stats=stats,
            on_error=lambda p, m: skipped.append(p))
    assert stats["resumed_shards"] == 2 and stats["computed_images"] == 21 - 12
    assert sorted(skipped) == BROKEN            # the resumed shards' skipped images are reported too
    assert_same(out, npz)


def test_damaged_commit_is_recomputed_and_other_runs_replaced(folder, npz, tmp_path):
    out = tmp_path / "d.zarr"
    extract(tiny_net(), folder, blobs=["fc1", "pool1"], batch_size=4, shard_size=6, out=out)
    (out / "done" / "shard-000001.json").write_text('{"shard": 1, "fingerp')      # a torn commit
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"]["decaf_features"]["complete"] = False
    (out / "zarr.json").write_text(json.dumps(meta))
    stats = {}
    extract(tiny_net(), folder, blobs=["fc1", "pool1"], batch_size=4, shard_size=6, out=out, stats=stats)
    assert stats["resumed_shards"] == 3 and stats["computed_images"] == 6
    assert_same(out, npz)
    # another run (other blobs) into the same store replaces it
    extract(tiny_net(), folder, blobs=["relu2"], batch_size=4, shard_size=6, out=out)
    feats = load_features(out)
    assert sorted(k for k in feats if k in ("fc1", "pool1", "relu2")) == ["relu2"]
    np.testing.assert_array_equal(feats["relu2"], np.maximum(load_features(npz)["fc1"], 0))


def test_refusals(folder, tmp_path):
    other = tmp_path / "mine.zarr"
    other.mkdir()
    (other / "notes.txt").write_text("not a store")
    with pytest.raises(FileExistsError, match="not a feature store"):
        extract(tiny_net(), folder, out=other)
    assert (other / "notes.txt").exists()                     # nothing of the user's is deleted
    with pytest.raises(FileNotFoundError, match="no such feature store"):
        load_features(tmp_path / "absent.zarr")
    with output_lock(tmp_path / "busy.zarr"):
        with pytest.raises(OutputLocked, match="being written"):
            extract(tiny_net(), folder, out=tmp_path / "busy.zarr")


def test_cli_extract_transfer_and_tsne_read_a_store(folder, npz, tmp_path, capsys):
    from decaf import save
    model = tmp_path / "tiny.decaf"
    save(tiny_net(), model, preprocess={"resize_shorter": 18, "crop": 16})
    out = tmp_path / "cli.zarr"
    assert main(["extract", str(folder), "--model", str(model), "--blob", "fc1", "--shard", "6", "--batch", "4",
                 "-o", str(out), "--quiet"]) == 0
    assert f"wrote {out}: 19 images, fc1 8 (before ReLU); 2 skipped" in capsys.readouterr().out
    X, y, paths, blob = load_feature_set(str(out))
    X2, y2, paths2, _ = load_feature_set(str(npz), "fc1")
    assert blob == "fc1" and np.array_equal(X, X2) and list(y) == list(y2) and list(paths) == list(paths2)
    assert main(["transfer", str(out), "--per-class", "3", "--splits", "1"]) == 0
    assert "cli.zarr:fc1 (8-d)" in capsys.readouterr().out
    assert main(["tsne", str(out), "-o", str(tmp_path / "t.png"), "--perplexity", "5"]) == 0
    assert (tmp_path / "t.png").stat().st_size > 0


def test_images_and_store_at_fsspec_urls(folder, npz):
    """The folder copied to memory:// (plus a list file there), extracted into a memory:// store."""
    import fsspec
    fs = fsspec.filesystem("memory")
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fs.pipe(f"/src-{id(fs)}/{path.relative_to(folder).as_posix()}", path.read_bytes())
    base = f"memory:///src-{id(fs)}"
    fs.pipe(f"/src-{id(fs)}/list.txt", b"cats/00.png kitty\ndogs/12.png\ngone.png lost\n")
    out = f"memory://out-{id(fs)}/f.zarr"
    skipped = []
    extract(tiny_net(), base, blobs=["fc1", "pool1"], batch_size=4, shard_size=6, out=out,
            on_error=lambda p, m: skipped.append((p, m)))
    got, want = load_features(out), load_features(npz)
    for key in ("fc1", "pool1", "paths", "labels", "skipped"):
        np.testing.assert_array_equal(got[key], want[key])       # the same images, relative paths, labels
    assert got["root"] == base and sorted(p for p, _ in skipped) == BROKEN
    stats = {}                                                  # the same job again: nothing to compute
    extract(tiny_net(), base, blobs=["fc1", "pool1"], batch_size=4, shard_size=6, out=out, stats=stats)
    assert stats["resumed_shards"] == 4 and stats["computed_images"] == 0
    fs.pipe(f"/src-{id(fs)}/cats/03.png", (folder / "dogs" / "12.png").read_bytes())   # an image changes
    extract(tiny_net(), base, blobs=["fc1", "pool1"], batch_size=4, shard_size=6, out=out, stats=stats)
    assert stats["resumed_shards"] == 0 and stats["computed_images"] == 21
    assert all(base not in m for _, m in skipped)               # messages name relative paths
    listed = extract(tiny_net(), f"{base}/list.txt", blobs=["fc1"])
    assert list(listed["paths"]) == ["cats/00.png", "dogs/12.png"] and list(listed["labels"]) == ["kitty", ""]
    assert list(listed["skipped"]) == ["gone.png"] and "no such file" in listed["skipped_errors"][0]
    rows = [list(want["paths"]).index(p) for p in listed["paths"]]
    np.testing.assert_allclose(listed["fc1"], want["fc1"][rows], rtol=1e-5, atol=1e-6)   # other batches
    with pytest.raises(FileNotFoundError):
        extract(tiny_net(), f"{base}/nothing-here")
