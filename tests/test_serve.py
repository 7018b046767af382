"""decaf serve: the JSON API against the real app (Starlette's TestClient runs it in-process over
httpx), the batcher on its own, the uploads and limits, and `decaf serve` as a real server."""
import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("python_multipart")
pytest.importorskip("httpx")
from PIL import Image  # noqa: E402
from starlette.routing import Route  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import decaf  # noqa: E402
from decaf.image import preprocess  # noqa: E402
from decaf.models.lenet import lenet  # noqa: E402
from decaf.serve import Engine, Limits, create_app  # noqa: E402
from decaf.serve.batcher import Batcher, Overloaded  # noqa: E402
from decaf.serve.render import tile_grid  # noqa: E402
from decaf.serve.uploads import decode_image, parse_multipart  # noqa: E402
from decaf.serve.limits import ApiError, ImageRejected  # noqa: E402

LABELS = ["cat", "dog", "cup", "car"]
RECIPE = {"channels": "RGB", "resize_shorter": 32, "resample": "bilinear", "crop": 32, "scale": 1 / 255.0,
          "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
TOL = 1e-5     # float32 results of the same net on the same input, batched differently


def tiny_net():
    """LeNet on 3x32x32 with a Softmax: conv1 (4 maps), pool, conv2, two inner products."""
    net = decaf.Net(lenet(num_classes=4, input_shape=(3, 32, 32), with_loss=False, channels=(4, 6), hidden=8),
                    seed=3)
    net.meta = {"preprocess": RECIPE, "labels": LABELS}
    return net


def png(width=40, height=36, seed=0, fmt="PNG"):
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def files(*blobs):
    return [("image", (f"img{i}.png", b, "image/png")) for i, b in enumerate(blobs)]


@pytest.fixture(scope="module")
def reference():
    """A second net with the same weights, driven from the test thread only: the served net
    belongs to the server's inference thread."""
    return tiny_net()


def expected_probs(net, data):
    x = preprocess(Image.open(io.BytesIO(data)), RECIPE)
    return net.forward(data=x, outputs=["prob"])["prob"][0]


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Engine(tiny_net())), raise_server_exceptions=False) as c:
        yield c


def serve(engine=None, **limits):
    return TestClient(create_app(engine or Engine(tiny_net()), Limits(**limits)), raise_server_exceptions=False)


# ---- classify --------------------------------------------------------------------------------

def test_classify_one_image_matches_the_net(client, reference):
    data = png()
    r = client.post("/v1/classify?top=3", files=files(data))
    assert r.status_code == 200, r.text
    body = r.json()
    (result,) = body["results"]
    assert result["filename"] == "img0.png" and len(result["top"]) == 3
    p = expected_probs(reference, data)
    order = np.argsort(-p, kind="stable")[:3]
    assert [t["index"] for t in result["top"]] == order.tolist()
    assert [t["name"] for t in result["top"]] == [LABELS[k] for k in order]
    np.testing.assert_allclose([t["prob"] for t in result["top"]], p[order], atol=TOL)


def test_classify_several_images_a_bad_one_fails_alone(client, reference):
    good1, good2 = png(seed=1), png(50, 30, seed=2, fmt="JPEG")
    r = client.post("/v1/classify", files=files(good1, b"not an image at all", good2, png(seed=4)[:60]))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == [0, 1, 2, 3]
    assert results[1]["error"]["code"] == "bad_image" and "top" not in results[1]
    assert results[3]["error"]["code"] == "bad_image"        # a truncated PNG
    for i, data in ((0, good1), (2, good2)):
        p = expected_probs(reference, data)
        np.testing.assert_allclose(results[i]["top"][0]["prob"], p.max(), atol=TOL)
        assert len(results[i]["top"]) == 4                    # top 5 of 4 classes


def test_classify_a_raw_image_body(client, reference):
    data = png(seed=5)
    r = client.post("/v1/classify", content=data, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["results"][0]["top"][0]["prob"], expected_probs(reference, data).max(),
                               atol=TOL)


def test_oversample_averages_ten_crops(client, reference):
    data = png(48, 40, seed=6)
    r = client.post("/v1/classify?oversample=1", files=files(data))
    x = preprocess(Image.open(io.BytesIO(data)), RECIPE, oversample=True)
    p = reference.forward(data=x, outputs=["prob"])["prob"].mean(axis=0)
    got = {t["index"]: t["prob"] for t in r.json()["results"][0]["top"]}
    np.testing.assert_allclose([got[k] for k in range(4)], p, atol=TOL)


def test_timing_is_split_by_layer_group(client, reference):
    timing = client.post("/v1/classify", files=files(png())).json()["timing"]
    assert set(timing["by_group"]) == {layer.group for layer in reference.order}
    assert all(ms >= 0 for ms in timing["by_group"].values())
    assert sum(timing["by_group"].values()) <= timing["forward_ms"] + 1e-6
    assert timing["minibatches"][0]["crops"] >= 1


def test_parameter_errors_are_400(client):
    for query in ("top=0", "top=abc", "oversample=maybe"):
        r = client.post(f"/v1/classify?{query}", files=files(png()))
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_parameter", query


# ---- limits ------------------------------------------------------------------------------

def bomb_png(width, height):
    """A PNG whose header claims width x height 8-bit grey pixels, with a tiny compressed body:
    decoding it would allocate width*height bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024, 9))
            + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_from_its_header(client, monkeypatch):
    from PIL import ImageFile
    bomb = bomb_png(8000, 8000)       # 64 M pixels in ~100 bytes: under Pillow's own bomb limit, over ours
    assert len(bomb) < 200
    loaded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loaded.append(self.size))
    with pytest.raises(ImageRejected) as info:
        decode_image(bomb, 40_000_000)
    assert info.value.code == "image_too_large" and "8000x8000" in info.value.message
    assert loaded == []                                # refused before any pixel was decoded
    monkeypatch.undo()
    r = client.post("/v1/classify", files=files(png(), bomb, bomb_png(60000, 60000)))   # and one over Pillow's
    assert r.status_code == 200
    assert "top" in r.json()["results"][0]
    assert [x["error"]["code"] for x in r.json()["results"][1:]] == ["image_too_large"] * 2


def test_pixel_limit_applies_to_ordinary_images():
    with serve(max_pixels=1000) as c:
        r = c.post("/v1/classify", files=files(png(30, 30), png(40, 40)))
        codes = [x.get("error", {}).get("code") for x in r.json()["results"]]
        assert codes == [None, "image_too_large"]


def test_upload_too_large_from_content_length_and_while_streaming():
    with serve(max_upload_bytes=2000) as c:
        r = c.post("/v1/classify", files=files(png(64, 64)))
        assert r.status_code == 413 and r.json()["error"]["code"] == "upload_too_large"

        def chunks():            # no Content-Length: the body is counted as it arrives
            for _ in range(10):
                yield b"\0" * 1000
        r = c.post("/v1/classify", content=chunks(), headers={"Content-Type": "image/png"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "upload_too_large"
        assert c.get("/healthz").status_code == 200


def test_too_many_images_no_images_and_wrong_type(client):
    with serve(max_images=2) as c:
        r = c.post("/v1/classify", files=files(png(), png(), png()))
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_images"
    r = client.post("/v1/classify", data={"note": "no file here"}, files=[("other", ("x.txt", b"x", "text/plain"))])
    assert r.status_code == 200 and r.json()["results"][0]["error"]["code"] == "bad_image"  # a file part is an image
    r = client.post("/v1/classify", data={"note": "no file"})
    assert r.status_code in (400, 415)
    r = client.post("/v1/classify", content=b"", headers={"Content-Type": "image/png"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_images"
    r = client.post("/v1/classify", content=b"hello", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = client.post("/v1/classify", content=b"--x\r\ngarbage", headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 400


def test_queue_full_is_503_and_nothing_is_half_queued():
    with serve(max_queue=2) as c:
        r = c.post("/v1/classify", files=files(png(), png(), png()))
        assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
        assert r.headers["retry-after"] == "1"
        assert c.get("/healthz").json()["queued"] == 0
        assert c.post("/v1/classify", files=files(png(), png())).status_code == 200


class GatedEngine(Engine):
    """An engine whose forward passes wait for ``gate`` (to hold the inference thread busy), and
    can be told to fail."""

    def __init__(self, net):
        super().__init__(net)
        self.gate = threading.Event()
        self.gate.set()
        self.fail = 0

    def run(self, outputs, x):
        self.gate.wait(30)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("simulated kernel failure")
        return super().run(outputs, x)


def test_request_timeout_is_503_and_the_server_recovers():
    engine = GatedEngine(tiny_net())
    engine.gate.clear()
    with serve(engine, request_timeout=0.5) as c:
        r = c.post("/v1/classify", files=files(png()))
        assert r.status_code == 503 and r.json()["error"]["code"] == "timeout"
        engine.gate.set()
        assert c.post("/v1/classify", files=files(png())).status_code == 200
        assert c.get("/healthz").json()["status"] == "ok"


def test_a_failed_forward_fails_its_requests_not_the_server():
    engine = GatedEngine(tiny_net())
    engine.fail = 1
    with serve(engine) as c:
        r = c.post("/v1/classify", files=files(png()))
        assert r.status_code == 500 and r.json()["error"]["code"] == "inference_failed"
        assert "simulated kernel failure" in r.json()["error"]["message"]
        assert c.post("/v1/classify", files=files(png())).status_code == 200
        health = c.get("/healthz").json()
        assert health["status"] == "ok" and health["served"]["failed_batches"] == 1


def test_uploads_never_touch_the_disk(client, monkeypatch):
    import tempfile

    def refuse(*a, **k):
        raise AssertionError("an upload was about to be written to a temporary file")
    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    big = png(700, 700, seed=9)              # ~1.5 MB: over the 1 MB at which Starlette's parser spools
    assert len(big) > 1024 * 1024
    r = client.post("/v1/classify", files=files(big))
    assert r.status_code == 200 and "top" in r.json()["results"][0]


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_images"):
        Limits(max_images=0)
    Limits(batch_wait_ms=0)


# ---- features, activations, filters ----------------------------------------------------------

def test_features_json_and_npy(client, reference):
    a, b = png(seed=11), png(seed=12)
    r = client.post("/v1/features?blob=pool2,ip1", files=files(a, b"junk", b))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["blobs"] == ["pool2", "ip1"]
    for i, data in ((0, a), (2, b)):
        x = preprocess(Image.open(io.BytesIO(data)), RECIPE)
        want = reference.forward(data=x, outputs=["pool2", "ip1"])
        for blob in ("pool2", "ip1"):
            got = body["results"][i]["features"][blob]
            assert got["shape"] == list(want[blob].shape[1:])
            np.testing.assert_allclose(np.reshape(got["data"], got["shape"]), want[blob][0], atol=TOL)
    assert body["results"][1]["error"]["code"] == "bad_image"

    r = client.post("/v1/features?blob=pool2&format=npy", files=files(a, b"junk", b))
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy"
    array = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert array.shape == (2,) + tuple(want["pool2"].shape[1:]) and array.dtype == np.float32
    assert json.loads(r.headers["x-decaf-rows"]) == [0, 2]
    assert json.loads(r.headers["x-decaf-errors"])[0]["index"] == 1
    x = preprocess(Image.open(io.BytesIO(b)), RECIPE)
    np.testing.assert_allclose(array[1], reference.forward(data=x, outputs=["pool2"])["pool2"][0], atol=TOL)
    r = client.post("/v1/features", files=files(a), headers={"Accept": "application/x-npy"})
    assert np.load(io.BytesIO(r.content)).shape == (1, 8)      # the default blob: ip2's input, ip1


def test_features_errors(client):
    r = client.post("/v1/features?blob=nope", files=files(png()))
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_blob" and "nope" in r.text
    r = client.post("/v1/features?blob=ip1,pool2&format=npy", files=files(png()))
    assert r.status_code == 400 and "one blob" in r.json()["error"]["message"]
    r = client.post("/v1/features?format=csv", files=files(png()))
    assert r.status_code == 400


def test_activations_png(client, reference):
    data = png(seed=13)
    r = client.post("/v1/activations?blob=conv1", files=files(data))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert json.loads(r.headers["x-decaf-shape"]) == [4, 28, 28]
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    x = preprocess(Image.open(io.BytesIO(data)), RECIPE)
    want = tile_grid(reference.forward(data=x, outputs=["conv1"])["conv1"][0], min_tile=48)
    assert img.shape == want.shape
    assert np.abs(img.astype(int) - want).max() <= 1          # float32 rounding at the 0..255 scaling
    r = client.post("/v1/activations?blob=ip1", files=files(data))
    assert r.status_code == 400 and r.json()["error"]["code"] == "not_feature_maps"
    r = client.post("/v1/activations?blob=conv1", files=files(b"junk"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_image"


def test_filters_png(client, reference):
    r = client.get("/v1/filters.png")
    assert r.status_code == 200 and r.headers["x-decaf-layer"] == "conv1"
    img = np.asarray(Image.open(io.BytesIO(r.content)))
    w = reference.params["conv1.weight"].data          # (4, 3, 5, 5)
    assert img.shape == tile_grid(w.transpose(0, 2, 3, 1), min_tile=32).shape


def test_tile_grid_places_tiles_row_by_row():
    tiles = np.stack([np.full((2, 3), v, np.float32) for v in (0, 1, 2, 3, 4)])   # 5 tiles: 3 columns, 2 rows
    grid = tile_grid(tiles, min_tile=1, pad=1)
    assert grid.shape == (2 * 3 + 1, 3 * 4 + 1)
    assert grid[1, 1] == 0 and grid[1, 5] == 64 and grid[1, 9] == 128 and grid[4, 1] == 191 and grid[4, 5] == 255
    assert grid[0].min() == 255 and grid[4, 9] == 255          # padding, and the empty sixth cell


# ---- model, health, OpenAPI, errors ----------------------------------------------------------

def test_model_description(client, reference):
    m = client.get("/v1/model").json()
    assert m["labels"] == LABELS and m["recipe"]["crop"] == 32 and m["spec"] == reference.spec
    assert m["prob_blob"] == "prob" and m["feature_blob"] == "ip1" and m["filters"] == "conv1"
    layers = {x["blob"]: x for x in m["layers"]}
    assert layers["conv1"]["layers"] == ["conv1", "relu1"] and layers["conv1"]["maps"]
    assert layers["conv1"]["group"] == "conv" and layers["conv1"]["shape"] == [4, 28, 28]
    assert not layers["ip1"]["maps"]
    assert m["limits"]["max_images"] == Limits().max_images


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_openapi_describes_every_route(client):
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    app_routes = {(r.path, m.lower()) for r in client.app.routes if isinstance(r, Route) and r.path != "/"
                  for m in r.methods if m != "HEAD"}
    doc_routes = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert app_routes == doc_routes


def test_errors_are_json(client):
    r = client.get("/no/such/page")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get("/v1/classify")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_the_page_and_its_script_are_served(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert '<script src="/static/app.js">' in r.text and 'name="viewport"' in r.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


# ---- the batcher and the one inference thread -----------------------------------------------

class Recorder:
    """A run function that records each minibatch's size and can hold the thread at a gate."""

    def __init__(self):
        self.sizes, self.keys, self.gate, self.entered = [], [], threading.Event(), threading.Event()

    def __call__(self, outputs, x):
        self.entered.set()
        self.gate.wait(30)
        self.sizes.append(x.shape[0])
        self.keys.append(outputs)
        return {"y": x * 2}, {"forward_ms": 0.0, "by_group": {}}


def test_batcher_gathers_waiting_jobs_into_minibatches():
    rec = Recorder()
    b = Batcher(rec, max_batch=8, wait_ms=0, max_queue=100).start()
    try:
        first = b.submit(("y",), [np.zeros((1, 2), np.float32)])
        assert rec.entered.wait(10)                      # the thread holds the first job
        xs = [np.full((1, 2), i, np.float32) for i in range(20)]
        futures = b.submit(("y",), xs)
        other = b.submit(("z",), [np.zeros((1, 2), np.float32)])
        rec.gate.set()
        for f, x in zip(futures, xs):
            rows, info = f.result(10)
            np.testing.assert_array_equal(rows["y"], x * 2)      # each job gets its own rows back
        first[0].result(10)
        other[0].result(10)
    finally:
        b.stop()
    assert rec.sizes == [1, 8, 8, 4, 1]                  # at most max_batch crops; the "z" job on its own
    assert rec.keys[-1] == ("z",)


def test_batcher_waits_for_company_within_the_bound():
    rec = Recorder()
    rec.gate.set()
    b = Batcher(rec, max_batch=2, wait_ms=10_000, max_queue=10).start()   # a full minibatch ends the wait
    try:
        f1 = b.submit(("y",), [np.zeros((1, 1), np.float32)])
        time.sleep(0.05)
        f2 = b.submit(("y",), [np.ones((1, 1), np.float32)])
        f1[0].result(10), f2[0].result(10)
    finally:
        b.stop()
    assert rec.sizes == [2]


def test_batcher_queue_bound_and_cancelled_jobs():
    rec = Recorder()
    b = Batcher(rec, max_batch=4, wait_ms=0, max_queue=3).start()
    try:
        b.submit(("y",), [np.zeros((1, 1), np.float32)])
        assert rec.entered.wait(10)
        queued = b.submit(("y",), [np.zeros((1, 1), np.float32)] * 3)
        with pytest.raises(Overloaded):
            b.submit(("y",), [np.zeros((1, 1), np.float32)])
        assert queued[0].cancel()                        # its request gave up: skipped, never run
        rec.gate.set()
        queued[1].result(10), queued[2].result(10)
    finally:
        b.stop()
    assert rec.sizes == [1, 2]


def test_engine_refuses_a_second_thread():
    engine = Engine(tiny_net())
    x = np.zeros((1, 3, 32, 32), np.float32)
    hold, done, errors = threading.Event(), threading.Event(), []

    def owner():
        engine.run(("prob",), x)
        done.set()
        hold.wait(10)
    t = threading.Thread(target=owner)
    t.start()
    assert done.wait(10)
    try:
        with pytest.raises(RuntimeError, match="one thread"):
            engine.run(("prob",), x)
    finally:
        hold.set()
        t.join()
    assert not errors
    engine.run(("prob",), x)                             # the first thread is gone: a new one may take over


def test_engine_run_holds_the_net_like_net_forward():
    """Someone else running the served net (Net.forward in another thread) makes Engine.run refuse."""
    from decaf.exclusive import exclusive
    engine = Engine(tiny_net())
    held, release = threading.Event(), threading.Event()

    def other_user():
        with exclusive(engine.net, "forward"):
            held.set()
            release.wait(10)
    t = threading.Thread(target=other_user)
    t.start()
    try:
        assert held.wait(10)
        with pytest.raises(RuntimeError, match="another thread"):
            engine.run(("prob",), np.zeros((1, 3, 32, 32), np.float32))
    finally:
        release.set()
        t.join()


def test_parse_multipart_keeps_files_and_image_fields_only():
    body = (b"--B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            b"Content-Type: image/png\r\n\r\nAAA\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nBBB\r\n--B--\r\n")
    parts = parse_multipart(body, b"B", max_images=5)
    assert [(p.filename, p.data) for p in parts] == [("a.png", b"AAA"), ("image", b"BBB")]
    with pytest.raises(ApiError) as info:
        parse_multipart(body, b"B", max_images=1)
    assert info.value.status == 413


# ---- the pretrained net and `decaf serve` itself ---------------------------------------------

def test_pretrained_classifies_chelsea_as_a_cat(pretrained_file, photos):
    with serve(Engine(decaf.load(pretrained_file))) as c:
        r = c.post("/v1/classify", files=[("image", ("chelsea.png", (photos / "chelsea.png").read_bytes(),
                                                     "image/png"))])
        names = [t["name"] for t in r.json()["results"][0]["top"]]
        assert any("tiger cat" in n or "tabby" in n for n in names), names


def test_decaf_serve_command_on_loopback(tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    net = tiny_net()
    path = tmp_path / "tiny.decaf"
    decaf.save(net, path, preprocess=RECIPE, labels=LABELS)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "decaf", "serve", str(path), "--port", "0", "--max-images", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("decaf serve: ") and "http://127.0.0.1:" in line, (line, proc.stderr.read())
        url = line.split(" on ", 1)[1].split()[0].rstrip("/")
        for _ in range(100):
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        r = httpx.post(f"{url}/v1/classify", files=files(png(), b"junk"), timeout=30)
        assert r.status_code == 200
        assert "top" in r.json()["results"][0] and r.json()["results"][1]["error"]["code"] == "bad_image"
        assert httpx.get(f"{url}/v1/model", timeout=5).json()["limits"]["max_images"] == 3
    finally:
        proc.terminate()
        proc.wait(20)
    assert proc.returncode in (0, -15)


def test_decaf_serve_help_mentions_loopback():
    out = subprocess.run([sys.executable, "-m", "decaf", "serve", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "127.0.0.1" in out.stdout and "--max-upload-mb" in out.stdout


@pytest.mark.parametrize("port", ["-1", "70000"])
def test_a_port_out_of_range_is_one_line(port, capsys):
    from decaf.cli import main
    assert main(["serve", "no-model-needed.decaf", "--port", port]) == 1
    assert f"decaf serve: error: --port must be 0 to 65535, got {port}" in capsys.readouterr().err
