"""The Starlette app: the page, the JSON API, and the limits around them.

Routes (docs/serve.md has examples; /openapi.json describes them):

    GET  /                      the page (static/index.html, plain JS, no build step)
    POST /v1/classify           top-k classes for one or many images
    POST /v1/features?blob=...  blobs (DeCAF features) for each image, as JSON or .npy
    POST /v1/activations?blob=  one image's feature maps in a blob, as a PNG grid
    GET  /v1/filters.png        the first convolution's filters, as a PNG grid
    GET  /v1/model              the model: spec, recipe, labels, layers, limits
    GET  /healthz               liveness: the inference thread and the queue
    GET  /openapi.json          the OpenAPI 3.1 description

A request's images are decoded on a small thread pool (``decode_threads``: it bounds the memory
that decoding can take), then each image becomes one job of the batcher, whose single thread
runs the net. Request threads never touch the net.
"""
import asyncio
import concurrent.futures
import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .batcher import Batcher, Overloaded
from .limits import ApiError, ImageRejected, Limits
from .openapi import openapi_document
from .render import feature_maps_png, filters_png
from .uploads import decode_image, images_from_body, read_body

STATIC = Path(__file__).parent / "static"
NPY = "application/x-npy"


class Server:
    """The engine, the limits, the decoding pool and the batcher behind one app."""

    def __init__(self, engine, limits=None):
        self.engine = engine
        self.limits = limits or Limits()
        self.batcher = Batcher(engine.run, max_batch=self.limits.max_batch, wait_ms=self.limits.batch_wait_ms,
                               max_queue=self.limits.max_queue)
        self.decoders = None
        name, weights = engine.filters()
        bgr = engine.recipe_dict["channels"] == "BGR"
        self.filters = (name, filters_png(weights, bgr=bgr)) if weights is not None else (None, None)
        self.started = time.time()

    def start(self):
        self.decoders = concurrent.futures.ThreadPoolExecutor(self.limits.decode_threads,
                                                              thread_name_prefix="decaf-decode")
        self.batcher.start()

    def stop(self):
        self.batcher.stop()
        self.decoders.shutdown(wait=False, cancel_futures=True)

    # ---- one request's images -> the net -------------------------------------------------
    def _prepare(self, data, oversample):
        """Bytes -> crops, on a decoding thread. Any failure is this image's alone."""
        try:
            return decode_image(data, self.limits.max_pixels, lambda img: self.engine.preprocess(img, oversample))
        except ImageRejected:
            raise
        except Exception as exc:     # a decoder's surprise on a crafted file fails the image only
            raise ImageRejected("bad_image", f"cannot read the image ({type(exc).__name__}: {exc})") from None

    async def run_images(self, request, outputs, oversample):
        """(uploads, [rows or ImageRejected per image], timing) for the images of ``request``."""
        t0 = time.perf_counter()
        body = await read_body(request, self.limits.max_upload_bytes)
        uploads = images_from_body(body, request.headers.get("content-type"), self.limits.max_images)
        del body
        loop = asyncio.get_running_loop()
        prepared = await asyncio.gather(*(loop.run_in_executor(self.decoders, self._prepare, u.data, oversample)
                                          for u in uploads), return_exceptions=True)
        for p in prepared:
            if isinstance(p, BaseException) and not isinstance(p, ImageRejected):
                raise p
        t1 = time.perf_counter()
        good = [i for i, p in enumerate(prepared) if not isinstance(p, ImageRejected)]
        try:
            futures = self.batcher.submit(outputs, [prepared[i] for i in good]) if good else []
        except Overloaded as exc:
            raise ApiError(503, "overloaded", f"the server is busy: {exc}; retry later",
                           headers={"Retry-After": "1"}) from None
        waiting = [asyncio.wrap_future(f) for f in futures]
        try:
            done = await asyncio.gather(*waiting)
        except asyncio.CancelledError:
            for f in futures:
                f.cancel()
            raise
        except Exception as exc:
            raise ApiError(500, "inference_failed", f"the forward pass failed: {type(exc).__name__}: {exc}") from None
        results = list(prepared)
        for i, out in zip(good, done):
            results[i] = out
        return uploads, results, _timing(t0, t1, done)


def _timing(t0, t1, done):
    """The request's time: decoding, waiting in the queue, and its share of each minibatch's
    forward pass (its crops / the minibatch's crops) split by layer group."""
    by_group, forward = {}, 0.0
    for _, info in done:
        share = info["crops"] / info["batch_crops"]
        forward += share * info["forward_ms"]
        for group, ms in info["by_group"].items():
            by_group[group] = by_group.get(group, 0.0) + share * ms
    return {"total_ms": (time.perf_counter() - t0) * 1e3, "decode_ms": (t1 - t0) * 1e3,
            "queue_ms": max((info["queue_ms"] for _, info in done), default=0.0),
            "forward_ms": forward, "by_group": dict(sorted(by_group.items(), key=lambda kv: -kv[1])),
            "minibatches": [{"images": info["batch_images"], "crops": info["batch_crops"],
                             "forward_ms": info["forward_ms"]} for _, info in done]}


def _flag(request, name):
    value = request.query_params.get(name, "0").lower()
    if value not in ("0", "1", "false", "true", "no", "yes", ""):
        raise ApiError(400, "bad_parameter", f"{name} must be true or false, not {value!r}")
    return value in ("1", "true", "yes")


def _int(request, name, default, lo, hi):
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be an integer, not {raw!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, "bad_parameter", f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _blobs(request, engine, default):
    names = [n.strip() for v in request.query_params.getlist("blob") for n in v.split(",") if n.strip()]
    names = names or [default]
    unknown = [n for n in names if not engine.has_blob(n)]
    if unknown:
        raise ApiError(400, "unknown_blob", f"no blob {', '.join(map(repr, unknown))} in {engine.name}; "
                       "GET /v1/model lists the layers and their blobs")
    if len(set(names)) != len(names):
        raise ApiError(400, "bad_parameter", f"a blob is asked twice: {names}")
    return names


def _failed(upload, i, error):
    return {"index": i, "filename": upload.filename, "error": error.body()}


# ---- routes ----------------------------------------------------------------------------------

async def page(request):
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def classify(request):
    server = request.app.state.server
    engine = server.engine
    top = _int(request, "top", 5, 1, len(engine.labels) if engine.labels else 1000)
    oversample = _flag(request, "oversample")
    uploads, results, timing = await server.run_images(request, (engine.prob_blob,), oversample)
    out = []
    for i, (upload, r) in enumerate(zip(uploads, results)):
        if isinstance(r, ImageRejected):
            out.append(_failed(upload, i, r))
            continue
        rows, _ = r
        probs = rows[engine.prob_blob].reshape(rows[engine.prob_blob].shape[0], -1).mean(axis=0)
        out.append({"index": i, "filename": upload.filename, "top": engine.top_classes(probs, top)})
    return JSONResponse({"model": engine.name, "results": out, "timing": timing})


async def features(request):
    server = request.app.state.server
    engine = server.engine
    names = _blobs(request, engine, engine.feature_blob)
    fmt = request.query_params.get("format") or ("npy" if NPY in request.headers.get("accept", "") else "json")
    if fmt not in ("json", "npy"):
        raise ApiError(400, "bad_parameter", f"format must be json or npy, not {fmt!r}")
    if fmt == "npy" and len(names) != 1:
        raise ApiError(400, "bad_parameter", f".npy holds one array: ask for one blob, not {names}")
    oversample = _flag(request, "oversample")
    uploads, results, timing = await server.run_images(request, tuple(names), oversample)

    def per_image(rows, name):    # the mean over the crops (1, or 10 with oversample)
        return rows[name].mean(axis=0, dtype=np.float32)

    if fmt == "npy":
        name = names[0]
        good = [i for i, r in enumerate(results) if not isinstance(r, ImageRejected)]
        shape = (len(good),) + tuple(engine.blob_shapes[name])
        array = np.stack([per_image(results[i][0], name) for i in good]) if good else np.zeros(shape, np.float32)
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        errors = [_failed(uploads[i], i, r) for i, r in enumerate(results) if isinstance(r, ImageRejected)]
        return Response(buf.getvalue(), media_type=NPY, headers={
            "X-Decaf-Blob": name, "X-Decaf-Rows": json.dumps(good), "X-Decaf-Errors": json.dumps(errors),
            "Content-Disposition": f'attachment; filename="{name}.npy"'})
    out = []
    for i, (upload, r) in enumerate(zip(uploads, results)):
        if isinstance(r, ImageRejected):
            out.append(_failed(upload, i, r))
            continue
        feats = {}
        for name in names:
            value = per_image(r[0], name)
            feats[name] = {"shape": list(value.shape), "data": value.ravel().tolist()}
        out.append({"index": i, "filename": upload.filename, "features": feats})
    return JSONResponse({"model": engine.name, "blobs": names, "results": out, "timing": timing})


async def activations(request):
    server = request.app.state.server
    engine = server.engine
    names = _blobs(request, engine, engine.feature_blob)
    if len(names) != 1:
        raise ApiError(400, "bad_parameter", f"one blob at a time, not {names}")
    name = names[0]
    if len(engine.blob_shapes[name]) != 3:
        raise ApiError(400, "not_feature_maps", f"blob {name!r} has shape {list(engine.blob_shapes[name])} "
                       "per image, not (C, H, W) feature maps")
    max_maps = _int(request, "max_maps", 64, 1, 1024)
    uploads, results, _ = await server.run_images(request, (name,), False)
    if len(uploads) != 1:
        raise ApiError(400, "bad_parameter", f"send one image, not {len(uploads)}")
    if isinstance(results[0], ImageRejected):
        raise ApiError(422, results[0].code, f"{uploads[0].filename}: {results[0].message}")
    maps = results[0][0][name][0]
    png = await asyncio.get_running_loop().run_in_executor(server.decoders, feature_maps_png, maps, max_maps)
    return Response(png, media_type="image/png", headers={
        "X-Decaf-Blob": name, "X-Decaf-Shape": json.dumps(list(maps.shape)),
        "X-Decaf-Maps-Shown": str(min(max_maps, maps.shape[0]))})


async def filters(request):
    name, png = request.app.state.server.filters
    if png is None:
        raise ApiError(404, "no_filters", "the model has no convolution reading the image")
    return Response(png, media_type="image/png", headers={"X-Decaf-Layer": name})


async def model(request):
    server = request.app.state.server
    return JSONResponse(dict(server.engine.info(), limits=server.limits.to_dict()))


async def healthz(request):
    server = request.app.state.server
    alive = server.batcher.alive
    body = {"status": "ok" if alive else "down", "model": server.engine.name, "queued": server.batcher.queued(),
            "uptime_s": round(time.time() - server.started, 1), "served": dict(server.batcher.stats)}
    return JSONResponse(body, status_code=200 if alive else 503)


async def openapi(request):
    return JSONResponse(openapi_document(request.app.state.server.limits))


# ---- errors as JSON ------------------------------------------------------------------------

async def api_error(request, exc):
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def http_error(request, exc):
    codes = {404: "not_found", 405: "method_not_allowed"}
    return JSONResponse({"error": {"code": codes.get(exc.status_code, "http_error"), "message": str(exc.detail)}},
                        status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def server_error(request, exc):
    return JSONResponse({"error": {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}},
                        status_code=500)


def with_deadline(handler):
    """Bound the whole request (upload, decoding, queue, forward) by ``request_timeout``."""
    async def bounded(request):
        timeout = request.app.state.server.limits.request_timeout
        try:
            return await asyncio.wait_for(handler(request), timeout)
        except asyncio.TimeoutError:
            raise ApiError(503, "timeout", f"the request took longer than {timeout:g} s",
                           headers={"Retry-After": "1"}) from None
    bounded.__name__ = handler.__name__
    bounded.__doc__ = handler.__doc__
    return bounded


ROUTES = [
    Route("/", page, methods=["GET"]),
    Route("/v1/classify", with_deadline(classify), methods=["POST"]),
    Route("/v1/features", with_deadline(features), methods=["POST"]),
    Route("/v1/activations", with_deadline(activations), methods=["POST"]),
    Route("/v1/filters.png", filters, methods=["GET"]),
    Route("/v1/model", model, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]


def create_app(engine, limits=None):
    """The app for ``engine`` (an ``Engine``). Its inference thread starts with the app's lifespan
    (uvicorn, or ``with TestClient(app)``) and stops with it."""
    server = Server(engine, limits)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        server.start()
        try:
            yield
        finally:
            server.stop()

    app = Starlette(routes=ROUTES + [Mount("/static", StaticFiles(directory=STATIC), name="static")],
                    exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: server_error},
                    lifespan=lifespan)
    app.state.server = server
    return app
