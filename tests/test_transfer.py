"""decaf.transfer and decaf transfer / decaf tsne: the protocol, dropout on features, adaptation layers."""
import json

import numpy as np
import pytest

from decaf.cli import main
from decaf.transfer import (C_GRID, AdaptationLayers, choose_C, dropout_test, dropout_train, evaluate, format_table,
                            load_feature_set, mean_per_class_accuracy, per_class_split, run_protocol)


def blobs(rng, classes=4, per_class=25, dim=20, spread=0.6):
    centres = rng.normal(size=(classes, dim)) * 2
    X = np.concatenate([c + spread * rng.normal(size=(per_class, dim)) for c in centres]).astype(np.float32)
    y = np.repeat([f"c{i}" for i in range(classes)], per_class)
    return X, y


def save_features(path, X, y, name="feat"):
    np.savez(path, **{name: X}, paths=np.asarray([f"{c}/{i}.png" for i, c in enumerate(y)]), labels=y,
             skipped=np.zeros(0, "<U1"), skipped_errors=np.zeros(0, "<U1"), root=np.asarray("/x"),
             info=np.asarray(json.dumps({"blobs": [name]})))


def test_mean_per_class_accuracy_by_hand():
    y = ["a", "a", "a", "a", "b"]
    pred = ["a", "a", "a", "a", "a"]
    assert mean_per_class_accuracy(y, pred) == pytest.approx(0.5)     # plain accuracy would say 0.8
    assert mean_per_class_accuracy(["a", "b", "b"], ["a", "b", "a"]) == pytest.approx(0.75)


def test_per_class_split(rng):
    y = np.array(["a"] * 5 + ["b"] * 8 + ["c"] * 3)
    train, test = per_class_split(y, 2, rng)
    assert len(train) == 6 and len(test) == 10 and not set(train) & set(test)
    assert sorted(np.unique(y[train], return_counts=True)[1]) == [2, 2, 2]
    assert sorted(set(train) | set(test)) == list(range(16))
    with pytest.raises(ValueError, match="'c' has 3 images"):
        per_class_split(y, 3, rng)


def test_dropout_on_features(rng):
    X = np.ones((200, 50), np.float32)
    D = dropout_train(X, rng)
    assert D.shape == X.shape and set(np.unique(D)) == {0.0, 1.0}
    assert abs((D == 0).mean() - 0.5) < 0.02
    assert dropout_train(X, rng, copies=3).shape == (600, 50)
    np.testing.assert_array_equal(dropout_test(X), 0.5 * X)       # the expected value of a masked feature
    np.testing.assert_allclose(dropout_train(X, rng, copies=20).mean(), dropout_test(X).mean(), atol=0.01)


def test_choose_C(rng):
    X, y = blobs(rng)
    C, scores = choose_C(X, y, "logreg")
    assert C in C_GRID and set(scores) == set(C_GRID) and max(scores.values()) == scores[C]
    assert choose_C(X[::25], y[::25]) == (1.0, {})                 # one image per class: nothing to validate on


@pytest.mark.parametrize("classifier", ["logreg", "svm"])
def test_evaluate_separable_blobs(rng, classifier):
    X, y = blobs(rng)
    r = evaluate(X, y, classifier, per_class=5, splits=3)
    assert r["mean"] > 0.95 and len(r["accuracies"]) == 3 and all(c in C_GRID for c in r["C"])
    again = evaluate(X, y, classifier, per_class=5, splits=3)
    assert again == r                                                # seeded: the same splits and answers
    # the scale of the features does not matter (one C grid for any feature)
    scaled = evaluate(1000 * X, y, classifier, per_class=5, splits=3)
    assert scaled["mean"] == pytest.approx(r["mean"], abs=0.02)
    dropped = evaluate(X, y, classifier, per_class=5, splits=2, dropout=True, copies=3)
    assert dropped["mean"] > 0.8


def test_run_protocol_table(rng):
    X, y = blobs(rng, classes=3, per_class=12, dim=8)
    results = run_protocol([("blobs", X, y)], ["logreg", "svm"], [1, 5], splits=2, dropout=(False, True),
                           copies=2)
    assert len(results) == 2 * 2 * 2
    assert {(r["classifier"], r["dropout"], r["per_class"]) for r in results} == {
        (c, d, n) for c in ("logreg", "svm") for d in (False, True) for n in (1, 5)}
    table = format_table(results)
    lines = table.splitlines()
    assert lines[0] == "| features | classifier | 1 per class | 5 per class |"
    assert len(lines) == 2 + 4 and "| blobs | svm + dropout |" in table and " ± " in lines[2]


def test_cli_transfer_and_tsne(tmp_path, rng, capsys):
    X, y = blobs(rng, classes=3, per_class=15, dim=10)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    save_features(a, X, y)
    save_features(b, rng.normal(size=X.shape).astype(np.float32), y, name="noise")
    code = main(["transfer", str(a), str(b), "--classifier", "logreg", "--classifier", "svm", "--per-class", "2",
                 "5", "--splits", "2", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "| a.npz:feat (10-d) | logreg |" in out and "| b.npz:noise (10-d) | svm |" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["protocol"]["splits"] == 2 and len(report["results"]) == 2 * 2 * 2
    by = {(r["features"].split(":")[0], r["classifier"], r["per_class"]): r["mean"] for r in report["results"]}
    assert by[("a.npz", "logreg", 5)] > 0.9 and by[("b.npz", "logreg", 5)] < 0.7   # noise is noise
    assert main(["transfer", str(a), "--per-class", "20"]) == 1                     # too few images per class
    assert "has 15 images" in capsys.readouterr().err
    code = main(["tsne", str(a), "-o", str(tmp_path / "t.png"), "--perplexity", "10", "--coords",
                 str(tmp_path / "xy.npz")])
    assert code == 0 and (tmp_path / "t.png").stat().st_size > 1000
    xy = np.load(tmp_path / "xy.npz")
    assert xy["xy"].shape == (45, 2) and list(xy["labels"]) == list(y)


def test_load_feature_set_needs_a_blob_when_several(tmp_path, rng):
    path = tmp_path / "two.npz"
    np.savez(path, f1=np.zeros((3, 2)), f2=np.ones((3, 4, 1, 1)), labels=np.array(["a", "b", "a"]),
             paths=np.array(["x", "y", "z"]))
    with pytest.raises(ValueError, match="several"):
        load_feature_set(path)
    X, y, paths, blob = load_feature_set(path, "f2")
    assert X.shape == (3, 4) and X.dtype == np.float32 and blob == "f2" and list(y) == ["a", "b", "a"]
    with pytest.raises(KeyError):
        load_feature_set(path, "f3")


def test_adaptation_layers_learn(rng):
    # three classes that no linear classifier separates: rings at radius 1, 2, 3
    n = 150
    radius = np.repeat([1.0, 2.0, 3.0], n)
    angle = rng.uniform(0, 2 * np.pi, 3 * n)
    X = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1) + 0.1 * rng.normal(size=(3 * n, 2))
    y = np.repeat([0, 1, 2], n)
    model = AdaptationLayers(3, hidden=64, dropout=0.0, lr=0.05, epochs=60, batch_size=32, seed=0).fit(X, y)
    assert model.losses[-1] < 0.5 * model.losses[0]
    p = model.predict_proba(X)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    assert np.mean(p.argmax(1) == y) > 0.9
    spec = AdaptationLayers(5).spec(1280)
    assert [layer["type"] for layer in spec["layers"]] == ["InnerProduct", "ReLU", "Dropout", "InnerProduct",
                                                           "SoftmaxWithLoss"]
    assert spec["layers"][0]["num_output"] == 2048 and spec["layers"][3]["num_output"] == 5
    with pytest.raises(RuntimeError):
        AdaptationLayers(2).predict_proba(X)
