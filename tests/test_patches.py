"""decaf.patches (Oquab et al.): the patch grid, the labelling rules, k-power aggregation, score maps."""
import numpy as np
import pytest
from PIL import Image

from decaf.patches import (BACKGROUND, SCALES, box_area, grid_positions, image_scores, intersection_area,
                           label_patches, patch_batches, patch_boxes, save_overlay, score_map, subsample_background)


def test_grid_positions_by_hand():
    # 100 px, side 60: steps of at most 30 -> n = ceil(40 / 30) + 1 = 3, evenly spread
    assert grid_positions(100, 60) == [0, 20, 40]
    assert grid_positions(60, 60) == [0]
    # 11 px, side 4: steps <= 2, n = ceil(7 / 2) + 1 = 5 at 0, 1.75, 3.5, 5.25, 7 rounded half up
    assert grid_positions(11, 4) == [0, 2, 4, 5, 7]
    assert grid_positions(10, 4) == [0, 2, 4, 6]
    with pytest.raises(ValueError):
        grid_positions(10, 11)


def test_patch_boxes_by_hand():
    boxes, lambdas = patch_boxes(100, 60)
    # lambda 1: side 60 -> x in {0, 20, 40}, y in {0}
    first = boxes[lambdas == 1.0]
    assert first.tolist() == [[0, 0, 60, 60], [20, 0, 80, 60], [40, 0, 100, 60]]
    # lambda 1.3: side round(60 / 1.3) = 46, step <= 23: x at 0, 18, 36, 54; y at 0, 14
    second = boxes[lambdas == 1.3]
    assert sorted({int(b[0]) for b in second}) == [0, 18, 36, 54] and sorted({int(b[1]) for b in second}) == [0, 14]
    assert (second[:, 2] - second[:, 0] == 46).all()
    # lambda 4: side 15, step <= 7: ceil(85 / 7) + 1 = 14 columns, ceil(45 / 7) + 1 = 8 rows
    assert (lambdas == 4.0).sum() == 14 * 8
    assert sorted(set(lambdas)) == list(SCALES)


@pytest.mark.parametrize("w,h", [(100, 60), (480, 360), (37, 91), (224, 224)])
def test_patch_grid_properties(w, h):
    boxes, lambdas = patch_boxes(w, h)
    side = boxes[:, 2] - boxes[:, 0]
    assert (side == boxes[:, 3] - boxes[:, 1]).all()                       # square
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    for lam in SCALES:
        sel = boxes[lambdas == lam]
        s = int(round(min(w, h) / lam))
        assert (sel[:, 2] - sel[:, 0] == s).all()
        xs, ys = sorted({int(v) for v in sel[:, 0]}), sorted({int(v) for v in sel[:, 1]})
        assert xs[0] == 0 and xs[-1] + s == w and ys[0] == 0 and ys[-1] + s == h   # covers the image
        for pos in (xs, ys):
            steps = np.diff(pos)
            assert (steps <= s / 2).all()                                   # neighbours overlap >= 50 %


def test_box_geometry():
    assert box_area([[0, 0, 10, 5], [3, 3, 3, 9]]).tolist() == [50, 0]
    inter = intersection_area([[0, 0, 10, 10]], [[5, 5, 20, 20], [10, 0, 20, 10], [2, 3, 4, 7]])
    assert inter.tolist() == [[25, 0, 8]]


def test_labelling_rules_by_hand():
    cat = (10, 10, 30, 30)                        # 20 x 20 = 400
    patches = [
        (0, 0, 40, 40),       # |P∩B| = 400 = 0.25 |P| >= 0.2 |P|, = |B|: positive
        (0, 0, 20, 20),       # 100: 0.25 |P| but only 0.25 |B| < 0.6 |B|: background
        (0, 0, 100, 100),     # 400 = 0.04 |P| < 0.2 |P|: background
        (10, 10, 30, 22),     # 240 = 0.6 |B| exactly, = |P|: positive (the rules are >=)
        (10, 10, 29, 22),     # 228 < 0.6 |B| = 240: background
        (50, 50, 60, 60),     # no object at all: background
    ]
    labels = label_patches(patches, [cat], ["cat"])
    assert labels.tolist() == ["cat", BACKGROUND, BACKGROUND, "cat", BACKGROUND, BACKGROUND]


def test_labelling_other_objects():
    cat, cup = (10, 10, 30, 30), (35, 0, 45, 10)
    # (0, 0, 40, 40) holds the cat but also touches the cup (5 x 10 = 50 px): background
    # (0, 0, 34, 34) holds the cat and misses the cup: cat
    # (30, 0, 50, 20) holds the whole cup (100 = 0.25 |P|) and touches nothing else: cup
    # (0, 0, 60, 40): both objects qualify: background
    labels = label_patches([(0, 0, 40, 40), (0, 0, 34, 34), (30, 0, 50, 20), (0, 0, 60, 40)], [cat, cup],
                           ["cat", "cup"])
    assert labels.tolist() == [BACKGROUND, "cat", "cup", BACKGROUND]
    # two cats: a patch touching both is not a positive either
    assert label_patches([(0, 0, 40, 40)], [cat, (38, 38, 50, 50)], ["cat", "cat"]).tolist() == [BACKGROUND]
    assert label_patches([(0, 0, 5, 5)], np.zeros((0, 4)), []).tolist() == [BACKGROUND]
    with pytest.raises(ValueError):
        label_patches([(0, 0, 5, 5)], [cat], ["cat", "dog"])
    with pytest.raises(ValueError):
        label_patches([(0, 0, 5, 5)], [cat], [BACKGROUND])


def test_subsample_background():
    labels = np.array([BACKGROUND] * 100 + ["cat"] * 3 + [BACKGROUND] * 20 + ["cup"] * 2)
    keep = subsample_background(labels, 0.1, np.random.default_rng(0))
    assert len(keep) == 5 + 12 and (np.diff(keep) > 0).all()
    assert set(np.flatnonzero(labels != BACKGROUND)) <= set(keep.tolist())
    again = subsample_background(labels, 0.1, np.random.default_rng(0))
    np.testing.assert_array_equal(keep, again)
    assert subsample_background(labels, 0.0).tolist() == np.flatnonzero(labels != BACKGROUND).tolist()


def test_k_power_aggregation_by_hand():
    scores = np.array([[0.5, 1.0], [1.0, 0.0]])
    # class 0: (0.5^5 + 1^5) / 2 = (0.03125 + 1) / 2; class 1: (1 + 0) / 2
    np.testing.assert_allclose(image_scores(scores, k=5), [0.515625, 0.5])
    np.testing.assert_allclose(image_scores(scores, k=1), scores.mean(axis=0))
    # one confident patch beats many lukewarm ones under k = 5, though not under the plain mean
    confident, lukewarm = [0.9, 0.1, 0.1], [0.4, 0.4, 0.4]
    assert np.mean(confident) < np.mean(lukewarm)
    assert image_scores(confident)[0] > 10 * image_scores(lukewarm)[0]
    np.testing.assert_allclose(image_scores(confident), (0.9 ** 5 + 2 * 0.1 ** 5) / 3)


def test_score_map_by_hand():
    # two patches on a 4 x 3 image; pixel (1, 1) lies in both, column 3 in none
    smap = score_map([[0, 0, 2, 2], [1, 1, 3, 3]], [1.0, 3.0], width=4, height=3)
    np.testing.assert_allclose(smap, [[1, 1, 0, 0],
                                      [1, 2, 3, 0],
                                      [0, 3, 3, 0]])
    two = score_map([[0, 0, 2, 2], [1, 1, 3, 3]], [[1.0, 0.0], [3.0, 1.0]], width=4, height=3)
    assert two.shape == (2, 3, 4)
    np.testing.assert_allclose(two[0], smap)
    np.testing.assert_allclose(two[1][1], [0, 0.5, 1, 0])


def test_score_map_matches_brute_force(rng):
    w, h = 23, 17
    boxes, _ = patch_boxes(w, h, scales=(1, 2, 3))
    scores = rng.random((len(boxes), 2))
    fast = score_map(boxes, scores, w, h)
    total, count = np.zeros((2, h, w)), np.zeros((h, w))
    for (x0, y0, x1, y1), s in zip(boxes, scores):
        total[:, y0:y1, x0:x1] += s[:, None, None]
        count[y0:y1, x0:x1] += 1
    np.testing.assert_allclose(fast, total / count, atol=1e-12)


def test_patch_batches_crop_and_resize(rng):
    img = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    recipe = {"crop": 16, "resample": "bilinear", "scale": 1.0, "mean": [0, 0, 0], "std": [1, 1, 1]}
    boxes = [(0, 0, 40, 40), (30, 10, 50, 30), (5, 5, 13, 13)]
    batches = list(patch_batches(img, boxes, recipe, batch_size=2))
    assert [b.shape for b in batches] == [(2, 3, 16, 16), (1, 3, 16, 16)]
    want = np.asarray(img.crop((30, 10, 50, 30)).resize((16, 16), Image.Resampling.BILINEAR), np.float32)
    np.testing.assert_array_equal(batches[0][1], want.transpose(2, 0, 1))


def test_patch_features_with_a_small_net(rng):
    from decaf import Net
    from decaf.patches import patch_features
    from test_features import RECIPE, TINY
    net = Net(TINY, seed=0)
    net.meta = {"preprocess": dict(RECIPE)}
    img = Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8))
    boxes, _ = patch_boxes(50, 30, scales=(1, 2))
    feats = patch_features(net, img, boxes, blob="fc1", batch_size=4)
    assert feats.shape == (len(boxes), 8) and feats.dtype == np.float32
    x = next(patch_batches(img, boxes[:1], RECIPE))
    np.testing.assert_allclose(feats[0], net.forward(data=x, outputs=["fc1"])["fc1"][0], rtol=1e-5, atol=1e-6)


def test_save_overlay(tmp_path, rng):
    img = Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    smap = np.zeros((30, 40))
    smap[5:15, 10:20] = 1.0
    path = save_overlay(img, smap, tmp_path / "o.png", boxes=[(10, 5, 20, 15)])
    out = np.asarray(Image.open(path))
    assert out.shape == (30, 40, 3)
    np.testing.assert_array_equal(out[25:, 30:], np.asarray(img)[25:, 30:])    # score 0: the photo unchanged
    with pytest.raises(ValueError):
        save_overlay(img, np.zeros((5, 5)), tmp_path / "bad.png")
