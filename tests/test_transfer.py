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


# ---- metrics, splits and protocols of issue 15 ---------------------------------------------------


def test_average_precision_by_hand():
    from decaf.transfer import mean_average_precision, voc11_average_precision
    truth, scores = [1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]
    # ranked: hit, miss, hit, miss -> precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1
    # 11-point: recall levels 0..0.5 (6 of them) reach precision 1, levels 0.6..1 (5) reach 2/3
    assert voc11_average_precision(truth, scores) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    Y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], bool)
    S = np.array([[0.9, 0.2, 5], [0.8, 0.9, 4], [0.7, 0.1, 3], [0.1, 0.3, 2]])
    # class 0: precision at each hit 1 and 2/3 -> 5/6; class 1: hits at ranks 1 and 4 -> (1 + 2/4) / 2 = 3/4;
    # class 2 has no positive and is left out of the mean
    assert mean_average_precision(Y, S) == pytest.approx((5 / 6 + 3 / 4) / 2)
    assert mean_average_precision(Y, S, eleven_point=True) == pytest.approx(
        (voc11_average_precision(Y[:, 0], S[:, 0]) + voc11_average_precision(Y[:, 1], S[:, 1])) / 2)
    with pytest.raises(ValueError, match="no class has a positive"):
        mean_average_precision(Y[:, 2:], S[:, 2:])


def test_label_matrix():
    from decaf.transfer import label_matrix
    Y, classes = label_matrix(["dog,person", "cat", "person, dog ", ""])
    assert classes == ["cat", "dog", "person"]
    np.testing.assert_array_equal(Y, [[0, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match="'bird' is not one of the training classes"):
        label_matrix(["bird"], classes)


def test_test_per_class_split(rng):
    y = np.array(["a"] * 10 + ["b"] * 12)
    train, test = per_class_split(y, 3, rng, test_per_class=4)
    assert not set(train) & set(test) and len(train) == 6 and len(test) == 8
    assert sorted(np.unique(y[test], return_counts=True)[1]) == [4, 4]
    with pytest.raises(ValueError, match="'a' has 10 images: 3 for training and 8 for testing need 11"):
        per_class_split(y, 3, rng, test_per_class=8)
    X, yb = blobs(rng, classes=3, per_class=20)
    r = evaluate(X, yb, per_class=5, splits=2, test_per_class=10)
    assert r["test_images"] == [30, 30] and r["mean"] > 0.9


def multilabel_blobs(rng, n=120, classes=4, dim=16, noise=0.3):
    """Images holding each class with probability 0.35 (at least one); features: the sum of the class codes."""
    Y = rng.random((n, classes)) < 0.35
    Y[~Y.any(1), 0] = True
    codes = rng.normal(size=(classes, dim))
    X = (Y @ codes + noise * rng.normal(size=(n, dim))).astype(np.float32)
    labels = np.array([",".join(f"k{j}" for j in np.flatnonzero(row)) for row in Y])
    return X, labels, Y


def test_multilabel_map(rng):
    from decaf.transfer import label_matrix, multilabel_train
    X, labels, Y = multilabel_blobs(rng)
    M, classes = label_matrix(labels)
    np.testing.assert_array_equal(M, Y)
    train = multilabel_train(M, 5, np.random.default_rng(0), classes)
    assert (M[train].sum(0) >= 5).all() and (np.delete(M, train, 0).sum(0) >= 1).all()
    with pytest.raises(ValueError, match="leaves none to test on"):
        multilabel_train(M, int(M.sum(0).min()), np.random.default_rng(0), classes)
    grid = (0.1, 1.0, 10.0)                                       # a short grid keeps the test fast
    good = evaluate(X, labels, "logreg", per_class=8, splits=1, metric="map", grid=grid)
    noise = evaluate(rng.normal(size=X.shape).astype(np.float32), labels, "logreg", per_class=8, splits=1,
                     metric="map", grid=grid)
    svm11 = evaluate(X, labels, "svm", per_class=8, splits=1, metric="voc11", grid=grid)
    assert good["mean"] > 0.9 and svm11["mean"] > 0.9 and "accuracies" not in good
    assert noise["mean"] < 0.7                                   # chance: about the share of positives
    with pytest.raises(ValueError, match="single-label"):
        evaluate(X, labels, per_class=5, splits=1, metric="map", test_per_class=3)


def shifted_domains(rng, classes=4, per_class=15, dim=12):
    """A source and a target domain with the same classes: the target's class means are moved (a different
    random direction per class), so a classifier of the source alone mislabels much of the target."""
    centres = rng.normal(size=(classes, dim)) * 2
    moved = centres + rng.normal(size=(classes, dim)) * 3
    y = np.repeat([f"c{i}" for i in range(classes)], per_class)
    Xs = np.concatenate([c + 0.5 * rng.normal(size=(per_class, dim)) for c in centres]).astype(np.float32)
    Xt = np.concatenate([c + 0.5 * rng.normal(size=(per_class, dim)) for c in moved]).astype(np.float32)
    return (Xs, y), (Xt, y.copy())


def test_domain_shift_settings(rng):
    from decaf.transfer import evaluate_shift
    source, target = shifted_domains(rng)
    r = {s: evaluate_shift(source, target, s, per_class=10, target_per_class=3, splits=2, grid=(0.1, 1.0, 10.0))
         for s in ("S", "T", "ST")}
    assert all(x["test_images"] == [4 * 12] * 2 for x in r.values())    # 15 - 3 target images of each class
    assert r["T"]["mean"] > 0.9 and r["ST"]["mean"] > 0.9 and r["S"]["mean"] < 0.8
    # T never sees the source: the same target draws (and test sets) whatever the source's N
    t_all = evaluate_shift(source, target, "T", per_class=None, target_per_class=3, splits=2, grid=(0.1, 1.0, 10.0))
    assert t_all["scores"] == r["T"]["scores"]
    same = evaluate_shift(source, source, "S", splits=1)            # no shift: the source classifier is right
    assert same["mean"] > 0.95
    with pytest.raises(ValueError, match="target classes missing from the source"):
        evaluate_shift(source, (target[0], np.where(target[1] == "c0", "new", target[1])), "S", splits=1)
    with pytest.raises(ValueError, match="target_per_class must be >= 1"):
        evaluate_shift(source, target, "T", target_per_class=0, splits=1)


def test_run_protocol_keeps_done_cells(rng):
    from decaf.transfer import cell_key, plan_cells
    X, y = blobs(rng, classes=3, per_class=10, dim=6)
    cells = plan_cells([("b", X, y)], ["logreg"], [2, 3], splits=1)
    assert [c["per_class"] for c in cells] == [2, 3] and len({cell_key(c) for c in cells}) == 2
    done = {cell_key(cells[0]): dict(cells[0], mean=-1.0, std=0.0)}   # a sentinel: must come back untouched
    computed = []
    results = run_protocol([("b", X, y)], ["logreg"], [2, 3], splits=1, done=done, on_result=computed.append)
    assert results[0]["mean"] == -1.0 and len(computed) == 1 and computed[0]["per_class"] == 3
    other = plan_cells([("b", X + 1, y)], ["logreg"], [2], splits=1)[0]   # other data: another key
    assert cell_key(other) != cell_key(cells[0])


def test_cli_domain_shift_table_and_plot(tmp_path, rng, capsys):
    source, target = shifted_domains(rng)
    save_features(tmp_path / "amazon.npz", *source)
    save_features(tmp_path / "webcam.npz", *target)
    out = tmp_path / "shift.json"
    code = main(["transfer", "--train-on", str(tmp_path / "amazon.npz"), "--test-on", str(tmp_path / "webcam.npz"),
                 "--per-class", "5", "all", "--splits", "1", "--classifier", "svm", "--json", str(out),
                 "--plot", str(tmp_path / "f.png"), "--quiet"])
    text = capsys.readouterr().out
    assert code == 0
    assert "| features | classifier | setting | 5 per class | all per class |" in text
    assert "| amazon.npz → webcam.npz:feat (12-d) | svm | ST |" in text
    report = json.loads(out.read_text())
    assert report["complete"] and report["protocol"]["settings"] == ["S", "T", "ST"]
    assert len(report["results"]) == 3 * 2
    assert {(r["setting"], r["per_class"]) for r in report["results"]} == {
        (s, n) for s in ("S", "T", "ST") for n in (5, None)}
    from PIL import Image
    assert Image.open(tmp_path / "f.png").size[0] > 300
    assert main(["transfer", "--train-on", str(tmp_path / "amazon.npz")]) == 1
    assert "needs both --train-on SRC and --test-on TGT" in capsys.readouterr().err
    assert main(["transfer", str(tmp_path / "amazon.npz"), "--per-class", "all"]) == 1
    assert "--per-class all is for a domain shift" in capsys.readouterr().err


def test_cli_partial_results_and_resume(tmp_path, rng, capsys, monkeypatch):
    import decaf.transfer as transfer
    X, y = blobs(rng, classes=3, per_class=12, dim=8)
    save_features(tmp_path / "a.npz", X, y)
    out = tmp_path / "r.json"
    args = ["transfer", str(tmp_path / "a.npz"), "--per-class", "1", "2", "4", "--splits", "1", "--json", str(out),
            "--quiet"]
    real, calls = transfer.run_cell, []

    def killed_after_two(cell, *a, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt           # Ctrl-C during the third cell
        calls.append(cell["per_class"])
        return real(cell, *a, **kw)

    monkeypatch.setattr(transfer, "run_cell", killed_after_two)
    assert main(args) == 130
    partial = json.loads(out.read_text())           # the two finished cells were written as they finished
    assert not partial["complete"] and [r["per_class"] for r in partial["results"]] == [1, 2]
    monkeypatch.setattr(transfer, "run_cell", lambda cell, *a, **kw: calls.append(cell["per_class"]) or
                        real(cell, *a, **kw))
    calls.clear()
    assert main(args + ["--resume"]) == 0
    assert calls == [4]                               # only the missing cell ran
    assert "2 of 3 cells already" in capsys.readouterr().err
    final = json.loads(out.read_text())
    assert final["complete"] and [r["per_class"] for r in final["results"]] == [1, 2, 4]
    assert final["results"][:2] == partial["results"]
    calls.clear()
    assert main(args + ["--resume"]) == 0 and calls == []      # nothing left: the file is rewritten as is
    assert json.loads(out.read_text()) == final
    assert main(args[:3] + ["2", "--splits", "1", "--json", str(out), "--quiet", "--resume"]) == 0
    err = capsys.readouterr().err
    assert calls == [] and "1 of 1 cells already" in err and "2 other cell(s) there are not part" in err
    assert [r["per_class"] for r in json.loads(out.read_text())["results"]] == [2]
    assert main(["transfer", str(tmp_path / "a.npz"), "--resume"]) == 1
    assert "--resume needs --json" in capsys.readouterr().err


def test_cli_multilabel_and_test_per_class(tmp_path, rng, capsys):
    X, labels, _ = multilabel_blobs(rng)
    save_features(tmp_path / "voc.npz", X, labels)
    assert main(["transfer", str(tmp_path / "voc.npz"), "--metric", "voc11", "--per-class", "6", "--splits", "1",
                 "--json", "-", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"]["metric"].startswith("mean average precision (PASCAL VOC 2007 11-point")
    assert report["results"][0]["mean"] > 0.85 and report["results"][0]["metric"] == "voc11"
    Xb, yb = blobs(rng, classes=3, per_class=14, dim=8)
    save_features(tmp_path / "b.npz", Xb, yb)
    assert main(["transfer", str(tmp_path / "b.npz"), "--per-class", "3", "--test-per-class", "10", "--splits", "1",
                 "--json", "-", "--quiet"]) == 0
    r = json.loads(capsys.readouterr().out)["results"][0]
    assert r["test_per_class"] == 10 and r["test_images"] == [30]


def test_multilabel_domain_shift_voc_style(rng):
    """VOC 2007 style: train on one labelled set (all of it), test on all of another (no target labels)."""
    from decaf.transfer import evaluate_shift
    X, labels, _ = multilabel_blobs(rng, n=160)
    trainval, test = (X[:80], labels[:80]), (X[80:], labels[80:])
    r = evaluate_shift(trainval, test, "S", per_class=None, target_per_class=0, splits=1, metric="voc11",
                       grid=(0.1, 1.0, 10.0))
    assert r["test_images"] == [80] and r["mean"] > 0.9
    with pytest.raises(ValueError, match="'k9' is not one of the training classes"):
        evaluate_shift(trainval, (test[0], np.where(test[1] == "k0", "k9", test[1])), "S", target_per_class=0,
                       splits=1, metric="map")


def test_plot_curves_draws_the_table(tmp_path, rng):
    from decaf.transfer import plot_curves
    X, y = blobs(rng, classes=3, per_class=10, dim=6)
    results = run_protocol([("b", X, y)], ["logreg", "svm"], [1, 4], splits=2)
    drawn = plot_curves(results, tmp_path / "f.svg")
    assert set(drawn) == {"b, logreg", "b, svm"}
    for label, (ns, means, stds) in drawn.items():
        rows = [r for r in results if r["classifier"] == label.split(", ")[1]]
        assert ns == [1, 4] and means == [100 * r["mean"] for r in rows] and stds == [100 * r["std"] for r in rows]
    assert (tmp_path / "f.svg").read_text().count("<path") > 10
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_curves([dict(results[0], per_class=None)], tmp_path / "g.png")


def test_cli_refuses_an_output_in_a_missing_folder_before_running(tmp_path, capsys, monkeypatch):
    import decaf.commands.transfer as command
    monkeypatch.setattr(command, "_feature_sets", lambda args: pytest.fail("features read before the check"))
    for flag, name in (("--json", "r.json"), ("--plot", "c.png")):
        out = tmp_path / "missing" / name
        assert main(["transfer", str(tmp_path / "f.npz"), flag, str(out), "--quiet"]) == 1
        assert f"{flag} {out}: the folder {out.parent} does not exist" in capsys.readouterr().err
    assert main(["transfer", str(tmp_path / "f.npz"), "--out-of-core", "--json", str(out.parent / "r.json")]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "0", "x"])
def test_cli_per_class_value_refused_in_words(value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["transfer", "f.npz", "--per-class", value])
    assert info.value.code == 2
    assert f"--per-class: give a whole number of at least 1, or 'all'; got '{value}'" in capsys.readouterr().err


def test_features_and_labels_that_do_not_match_are_refused():
    X, y = np.zeros((20, 3), np.float32), np.repeat(["a", "b"], 10)
    with pytest.raises(ValueError, match=r"features: 20 rows of shape \(3,\) for 10 labels"):
        evaluate(X, y[::2], per_class=3, splits=1)
    X[7, 1] = np.nan
    with pytest.raises(ValueError, match="features: 1 row\\(s\\) hold NaN or inf, e.g. row 7"):
        evaluate(X, y, per_class=3, splits=1)
    from decaf.transfer import evaluate_shift
    with pytest.raises(ValueError, match="target features: 1 row"):
        evaluate_shift((np.zeros((20, 3)), y), (X, y), splits=1)
