"""decaf.transfer_scale: DeCAF's protocol out of core (SGD partial_fit over the shards of a feature store).

References: the in-memory protocol (decaf.transfer, LogisticRegression) on the same features, and
decaf.transfer.mean_per_class_accuracy on in-memory predictions of the same trained model.
"""
import json

import numpy as np
import pytest

pytest.importorskip("zarr")
pytest.importorskip("dask")

from decaf.cli import main  # noqa: E402
from decaf.features import load_features  # noqa: E402
from decaf.featstore import save_store  # noqa: E402
from decaf.transfer import evaluate, mean_per_class_accuracy  # noqa: E402
from decaf.transfer_scale import ChunkedFeatures, _accuracy, _fit, evaluate_out_of_core  # noqa: E402


def blobs(rng, classes=4, per_class=40, dim=16, spread=1.0):
    centres = rng.normal(0, 3, (classes, dim))
    X = np.concatenate([centres[c] + rng.normal(0, spread, (per_class, dim)) for c in range(classes)])
    y = np.repeat([f"c{c}" for c in range(classes)], per_class)
    order = rng.permutation(len(y))
    X, y = X[order].astype(np.float32), y[order]
    return {"f": X, "paths": np.asarray([f"{c}/{i}.jpg" for i, c in enumerate(y)]), "labels": y,
            "skipped": np.asarray(["bad.jpg"]), "skipped_errors": np.asarray(["cannot identify image file"]),
            "root": "/imgs", "info": {"blobs": ["f"]}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("s") / "f.zarr"
    feats = blobs(np.random.default_rng(0), spread=2.5)
    save_store(out, feats, shard_size=25)
    return out, feats


def test_chunks_are_the_shards_and_cover_every_row(store):
    out, feats = store
    data = ChunkedFeatures(out)
    chunks = list(data.chunks())
    assert data.blob == "f" and data.dim == 16 and data.n == 160
    assert data.n_chunks() == len(chunks) == 7 and all(len(X) <= 25 for _, X in chunks)
    assert [first for first, _ in chunks] == list(range(0, 160, 25))
    np.testing.assert_array_equal(np.concatenate([X for _, X in chunks]), feats["f"])
    np.testing.assert_array_equal(load_features(out)["labels"], feats["labels"])
    reordered = dict(data.chunks(order=[3, 0]))
    np.testing.assert_array_equal(reordered[75], feats["f"][75:100])


def test_streamed_accuracy_is_the_in_memory_metric(store):
    out, feats = store
    data = ChunkedFeatures(out)
    rng = np.random.default_rng(1)
    y, classes = data.labels, np.unique(data.labels)
    train, test = np.arange(0, 160, 2), np.arange(1, 160, 2)
    models = _fit(data, train, y, classes, [0.1, 10.0], "log_loss", 0.5, 2, rng)
    streamed = _accuracy(data, test, y, classes, models, 0.5)
    for model, got in zip(models, streamed):
        want = mean_per_class_accuracy(y[test], model.predict(feats["f"][test] * 0.5))
        assert got == pytest.approx(want, abs=1e-12)


def test_out_of_core_protocol_agrees_with_the_in_memory_one(store):
    out, feats = store
    hard = blobs(np.random.default_rng(5), spread=5.0)          # overlapping classes: in memory ~0.8
    got = evaluate_out_of_core(_saved(hard, 80), per_class=[20], splits=2, seed=0, classifiers=["logreg", "svm"],
                               epochs=5, Cs=(0.1, 1.0, 10.0))
    want = evaluate(hard["f"], hard["labels"], per_class=20, splits=2, seed=0, grid=(0.1, 1.0, 10.0))["mean"]
    assert 0.5 < want < 0.97
    for r in got:
        assert r["per_class"] == 20 and len(r["scores"]) == 2 and len(r["C"]) == 2
        assert abs(r["mean"] - want) < 0.1, (r["classifier"], r["mean"], want)
    easy = blobs(np.random.default_rng(2), spread=0.3)           # well separated: perfect
    assert evaluate_out_of_core(_saved(easy, 80), per_class=[5], splits=1, epochs=3, Cs=[1.0])[0]["mean"] == 1.0


def _saved(feats, shard_size):
    out = f"memory://transfer-scale-{id(feats)}/f.zarr"
    save_store(out, feats, shard_size=shard_size)
    return out


def test_npz_with_the_same_chunks_gives_the_same_result(store, tmp_path):
    out, feats = store
    npz = tmp_path / "f.npz"
    np.savez(npz, **{k: np.asarray(v) if k != "info" else np.asarray(json.dumps(v)) for k, v in feats.items()})
    a = evaluate_out_of_core(out, per_class=[8], splits=2, seed=3, epochs=3, Cs=[1.0])
    data = ChunkedFeatures(npz, rows_per_chunk=25)
    from decaf.transfer_scale import evaluate_split
    b = [evaluate_split(data, 8, np.random.default_rng([3, 8, s]), "logreg", 3, [1.0])["accuracy"] for s in range(2)]
    assert a[0]["scores"] == b


def test_cli_out_of_core(store, tmp_path, capsys):
    out, _ = store
    code = main(["transfer", str(out), "--out-of-core", "--per-class", "5", "--splits", "2", "--epochs", "3",
                 "--classifier", "svm", "--json", str(tmp_path / "r.json")])
    assert code == 0
    text = capsys.readouterr().out
    assert "SGD out of core (3 epochs)" in text and "f.zarr:f (16-d)" in text and "svm" in text
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["out_of_core"] and len(report["results"][0]["scores"]) == 2
    assert main(["transfer", str(out), "--out-of-core", "--dropout"]) == 1
    assert "--out-of-core does not do --dropout" in capsys.readouterr().err
