"""decaf.sklearn.DeCAFFeatures: scikit-learn's API checks, features against a NumPy reference,
and a Pipeline + GridSearchCV on generated images.

check_estimator: sklearn runs its estimator checks only on estimators that take 2-D feature
tables (``input_tags.two_d_array``); DeCAFFeatures takes images (paths or (N, H, W, 3) uint8), so
``check_estimator`` runs just ``check_estimator_cloneable`` on it. The API checks that do not feed
a numeric table are run here one by one. The others (dtypes, NaN/inf, sparse input, pickling
after fit, sample-order and subset invariance, fit idempotence, n_features_in_...) all feed
float arrays of shape (n_samples, n_features), which are not images: DeCAFFeatures refuses them
with a ValueError. Their image equivalents are tested below (pickling, order and subset
invariance, NaN rows for unreadable images)."""
import pickle
import warnings

import numpy as np
import pytest
from PIL import Image

sklearn = pytest.importorskip("sklearn")
import sklearn.utils.estimator_checks as checks  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402

import decaf  # noqa: E402
from decaf.io.netfile import save  # noqa: E402
from decaf.recipe import Recipe  # noqa: E402
from decaf.sklearn import DeCAFFeatures  # noqa: E402

API_CHECKS = ["check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types",
              "check_estimator_repr", "check_no_attributes_set_in_init", "check_do_not_raise_errors_in_init_or_set_params",
              "check_mixin_order", "check_parameters_default_constructible", "check_get_params_invariance",
              "check_set_params"]


@pytest.fixture(scope="module")
def net_file(tmp_path_factory):
    """pool = the mean of each channel in 0..1 (8x8 images go in unresized); fc = a fixed random mix of it."""
    spec = {"name": "mean_colour", "inputs": {"data": [3, 8, 8]}, "layers": [
        {"name": "pool", "type": "Pooling", "bottom": "data", "top": "pool", "pool": "ave", "global_pooling": True},
        {"name": "fc", "type": "InnerProduct", "bottom": "pool", "top": "fc", "num_output": 4}]}
    rng = np.random.default_rng(0)
    net = decaf.Net.from_arrays(spec, {"fc.weight": rng.standard_normal((4, 3)).astype(np.float32),
                                       "fc.bias": np.zeros(4, np.float32)})
    path = tmp_path_factory.mktemp("net") / "mean_colour.decaf"
    save(net, path, preprocess=Recipe(crop=8, resize_shorter=8, scale=1 / 255, mean=0, std=1))
    return path


def images(n, seed=0):
    """n noisy 8x8 images and labels: class 1 is bluer than class 0."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, 160, (n, 8, 8, 3)).astype(np.uint8)
    x[y == 1, :, :, 2] += 90
    x[y == 0, :, :, 0] += 90
    return x, y


@pytest.mark.parametrize("name", API_CHECKS)
def test_sklearn_api_checks(name):
    getattr(checks, name)("DeCAFFeatures", DeCAFFeatures())


def test_check_estimator_runs_what_applies():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = checks.check_estimator(DeCAFFeatures(), on_fail=None)
    assert {r["check_name"]: r["status"] for r in results} == {"check_estimator_cloneable": "passed"}


def test_features_match_numpy_reference(net_file, tmp_path):
    x, _ = images(5)
    features = DeCAFFeatures(net_file, blob="pool").fit(x).transform(x)
    assert features.dtype == np.float32 and features.shape == (5, 3)
    np.testing.assert_allclose(features, x.reshape(5, -1, 3).mean(axis=1) / 255, rtol=1e-5)
    paths = []
    for i, image in enumerate(x):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    np.testing.assert_array_equal(DeCAFFeatures(net_file, blob="pool").transform(paths), features)
    order = [3, 0, 4]                                         # order and subset invariance
    np.testing.assert_array_equal(DeCAFFeatures(net_file, blob="pool", batch_size=2).transform(x[order]), features[order])
    est = pickle.loads(pickle.dumps(clone(DeCAFFeatures(net_file, blob="fc"))))
    fc = est.transform(x)
    assert fc.shape == (5, 4) and list(est.get_feature_names_out()[:2]) == ["fc0", "fc1"]


def test_bad_inputs(net_file, tmp_path):
    est = DeCAFFeatures(net_file, blob="pool")
    with pytest.raises(ValueError, match="uint8 images"):
        est.transform(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="image 1: .*missing.png"):
        est.transform([np.zeros((8, 8, 3), np.uint8), str(tmp_path / "missing.png")])
    with pytest.warns(RuntimeWarning, match="1 unreadable"):
        rows = DeCAFFeatures(net_file, blob="pool", on_error="nan").transform(
            [np.full((8, 8, 3), 255, np.uint8), str(tmp_path / "missing.png")])
    np.testing.assert_allclose(rows[0], 1.0)
    assert np.isnan(rows[1]).all()
    with pytest.raises(ValueError, match="on_error"):
        DeCAFFeatures(net_file, on_error="skip").fit()
    with pytest.raises(ValueError, match="no blob 'nope'"):
        DeCAFFeatures(net_file, blob="nope").transform(np.zeros((1, 8, 8, 3), np.uint8))


def test_pipeline_and_grid_search(net_file):
    x, y = images(24)
    pipe = Pipeline([("decaf", DeCAFFeatures(str(net_file))), ("clf", LogisticRegression(max_iter=500))])
    search = GridSearchCV(pipe, {"decaf__blob": ["pool", "fc"], "clf__C": [0.01, 100.0]}, cv=3)
    search.fit(x, y)
    assert set(search.best_params_) == {"decaf__blob", "clf__C"}
    assert search.best_score_ == 1.0                    # the classes differ in mean colour: separable
    x_test, y_test = images(10, seed=1)
    assert search.score(x_test, y_test) == 1.0
    assert len(search.cv_results_["params"]) == 4
