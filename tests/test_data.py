"""decaf.data: label checks, array and folder sources, the seeded minibatch iterator and its state."""
import json

import numpy as np
import pytest
from PIL import Image

from decaf.data import ArraySource, Batches, ImageFolder, check_labels, digits, split


def arrays(n=10, shape=(1, 4, 4)):
    x = np.arange(n * int(np.prod(shape)), dtype=np.float32).reshape((n,) + shape)
    return x, np.arange(n) % 3


# ---- labels and sources ----------------------------------------------------------------------

def test_check_labels_errors():
    assert check_labels([0, 2, 1.0]).dtype == np.int64
    with pytest.raises(ValueError, match="3 labels for 4 examples"):
        check_labels([0, 1, 2], n=4)
    with pytest.raises(ValueError, match="label 10 is out of range: the net has 10 classes"):
        check_labels([0, 10, 3], num_classes=10)
    with pytest.raises(ValueError, match="negative"):
        check_labels([0, -1])
    with pytest.raises(ValueError, match="whole numbers"):
        check_labels([0.5, 1])
    with pytest.raises(ValueError, match="integers"):
        check_labels(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="one label per example"):
        check_labels(np.zeros((3, 2)))


def test_array_source_errors():
    x, y = arrays()
    with pytest.raises(ValueError, match="9 labels for 10 examples"):
        ArraySource(x, y[:9])
    x[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ArraySource(x, y)
    with pytest.raises(ValueError, match="no examples"):
        ArraySource(np.zeros((0, 3)), [])


def test_split_is_stratified_and_seeded():
    x, y = arrays(30)
    train, test = split(ArraySource(x, y), 0.2, seed=1)
    assert len(train) == 24 and len(test) == 6
    assert np.bincount(test.labels).tolist() == [2, 2, 2]
    assert not set(train.x[:, 0, 0, 0]) & set(test.x[:, 0, 0, 0])
    again = split(ArraySource(x, y), 0.2, seed=1)[1]
    assert np.array_equal(again.x, test.x)
    with pytest.raises(ValueError, match="between 0 and 1"):
        split(ArraySource(x, y), 1.0)


def test_digits():
    train, test = digits()
    assert train.shape == (1, 8, 8) and len(train) + len(test) == 1797 and len(test) == 450
    assert 0 <= train.x.min() and train.x.max() <= 1 and train.classes == [str(i) for i in range(10)]


# ---- the iterator -----------------------------------------------------------------------------

def stream(batches, count):
    return [batches.next() for _ in range(count)]


def test_epochs_cover_every_example_and_wrap():
    x, y = arrays(10)
    b = Batches((x, y), 4, seed=0)
    got = np.concatenate([bx[:, 0, 0, 0] for bx, _ in stream(b, 5)]) / 16   # 20 = two epochs
    assert sorted(got[:10]) == list(range(10)) and sorted(got[10:]) == list(range(10))
    assert b.epoch == 2 and b.position == 0
    plain = Batches((x, y), 4, shuffle=False)
    assert [int(v) for v in plain.next()[1]] == [0, 1, 2, 0]


def test_same_seed_same_batches_other_seed_differs():
    x, y = arrays(12, (1, 6, 6))
    kw = {"crop": 4, "pad": 1, "mirror": True}
    a = stream(Batches((x, y), 5, seed=3, **kw), 7)
    b = stream(Batches((x, y), 5, seed=3, **kw), 7)
    c = stream(Batches((x, y), 5, seed=4, **kw), 7)
    assert all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1]) for p, q in zip(a, b))
    assert not all(np.array_equal(p[0], q[0]) for p, q in zip(a, c))


def test_state_restores_the_stream_exactly():
    x, y = arrays(11, (1, 6, 6))
    kw = {"crop": 5, "mirror": True}
    a = Batches((x, y), 4, seed=7, **kw)
    stream(a, 4)
    info, arr = a.state()
    info = json.loads(json.dumps(info))          # it travels as JSON in a snapshot
    expected = stream(a, 6)
    b = Batches((x, y), 4, seed=99, **kw)         # another seed: the state overrides it
    b.set_state(info, arr)
    for (ex, ey), (gx, gy) in zip(expected, stream(b, 6)):
        assert np.array_equal(ex, gx) and np.array_equal(ey, gy)
    with pytest.raises(ValueError, match="same training data"):
        Batches(arrays(12, (1, 6, 6)), 4).set_state(info, arr)


def test_crop_mirror_and_eval_batches():
    x = np.arange(2 * 16, dtype=np.float32).reshape(2, 1, 4, 4)
    b = Batches((x, [0, 1]), 2, seed=0, crop=2, mirror=True)
    assert b.shape == (1, 2, 2)
    for _ in range(10):
        bx, by = b.next()
        for xi, yi in zip(bx, by):            # every crop is a window of its image, maybe mirrored
            img = x[yi, 0]
            windows = [img[t:t + 2, s:s + 2] for t in range(3) for s in range(3)]
            assert any(np.array_equal(xi[0], w) or np.array_equal(xi[0], w[:, ::-1]) for w in windows)
    (ex, ey), = list(b.eval_batches())
    assert np.array_equal(ex, x[:, :, 1:3, 1:3]) and ey.tolist() == [0, 1]
    padded = Batches((x, [0, 1]), 2, pad=1)                    # pad alone: crop back to 4x4
    assert padded.crop == 4 and padded.shape == (1, 4, 4) and padded.next()[0].shape == (2, 1, 4, 4)
    assert np.array_equal(next(padded.eval_batches())[0], x)     # centre crop of the padded image
    with pytest.raises(ValueError, match="does not fit"):
        Batches((x, [0, 1]), 2, crop=5)
    with pytest.raises(ValueError, match="image examples"):
        Batches((np.zeros((2, 3), np.float32), [0, 1]), 2, mirror=True)


def test_eval_batches_cover_all_in_order():
    x, y = arrays(10)
    got = list(Batches((x, y), 4).eval_batches())
    assert [len(b[1]) for b in got] == [4, 4, 2]
    assert np.array_equal(np.concatenate([b[0] for b in got]), x)


# ---- image folders ---------------------------------------------------------------------------

def make_folder(root, classes=("cat", "dog"), per_class=3, size=(12, 10)):
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            color = (40 * k + 10 * i, 100, 200)
            Image.new("RGB", size, color).save(root / name / f"{i}.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_image_folder(tmp_path):
    root = make_folder(tmp_path / "imgs")
    src = ImageFolder(root, 8)
    assert src.classes == ["cat", "dog"] and src.labels.tolist() == [0, 0, 0, 1, 1, 1]
    x = src.get([0, 4])
    assert x.shape == (2, 3, 8, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x[1, :, 3, 3], np.array([50, 100, 200]) / 255, atol=1e-6)
    grey = ImageFolder(root, 5, channels=1).get([0])
    assert grey.shape == (1, 1, 5, 5)
    sub = src.subset([1, 5])
    assert sub.labels.tolist() == [0, 1] and np.array_equal(sub.get([1]), src.get([5]))
    b = Batches(src, 4, seed=0, crop=6, mirror=True)
    assert b.next()[0].shape == (4, 3, 6, 6)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        ImageFolder(tmp_path / "empty", 8)
    (tmp_path / "one" / "a").mkdir(parents=True)
    (tmp_path / "one" / "b").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "one" / "a" / "x.png")
    with pytest.raises(ValueError, match=r"class folder .*one/b' has no images"):
        ImageFolder(tmp_path / "one", 8)
    (tmp_path / "one" / "b" / "broken.jpg").write_bytes(b"not a jpeg")
    src = ImageFolder(tmp_path / "one", 8)
    with pytest.raises(ValueError, match="broken.jpg: cannot read image"):
        src.get([1])
