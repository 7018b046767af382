"""decaf serve under load: 16 concurrent clients on loopback, compared with `decaf classify`'s
batch throughput measured in the same run.

1. Batch reference: ``decaf.classify.classify`` (what ``decaf classify`` runs) over the photos,
   batch 16, for ``--batch-seconds``: images per second, decoding included. Its top-1 per photo is
   also the answer every good request must get.
2. ``decaf serve MODEL --port 0 --max-upload-mb 2`` in its own process, warmed up; its RSS read.
3. ``--clients`` threads, each with one keep-alive connection, send single-image requests for
   ``--seconds``: mostly good photos, some bad bytes, some uploads over the 2 MiB limit (the mix is
   seeded). Each request's latency and outcome are recorded; a good request is correct only when
   its top-1 equals the batch reference's.
4. The server's RSS again, and /healthz. Then the server is stopped.

Reports throughput of good images, p50/p99 latency of good requests, outcomes by kind, RSS before
and after, and the ratio to the batch throughput (the issue's target: >= 0.8, zero failed good
requests). Writes JSON. Loopback only; every loop is bounded by time and stops by itself.

    python benchmarks/bench_serve.py --seconds 30 --json benchmarks/results_serve.json
"""
import argparse
import collections
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)  # run from a checkout
import decaf  # noqa: E402
from decaf.classify import classify  # noqa: E402

PHOTOS = (("chelsea", "png"), ("coffee", "png"), ("rocket", "jpg"), ("astronaut", "jpg"))
UPLOAD_LIMIT_MB = 2


def save_photos(folder):
    import skimage.data
    from PIL import Image
    paths = []
    for name, ext in PHOTOS:
        path = os.path.join(folder, f"{name}.{ext}")
        Image.fromarray(getattr(skimage.data, name)()).save(path)
        paths.append(path)
    return paths


def batch_reference(model, paths, seconds, batch):
    """(images/s of classify over the photos repeated, {photo: top-1 index})."""
    from decaf.serve import load_net
    net = load_net(model)
    answers = {os.path.basename(r["path"]): r["top"][0]["index"] for r in classify(net, paths, top=1)}
    chunk = paths * 16                      # 64 images per call: 4 full batches of 16
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        classify(net, chunk, top=1, batch_size=batch)
        done += len(chunk)
    return done / (time.perf_counter() - t0), answers


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def start_server(model, extra=()):
    cmd = [sys.executable, "-m", "decaf", "serve", "--port", "0", "--max-upload-mb", str(UPLOAD_LIMIT_MB)]
    cmd += ([model] if model else []) + list(extra)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = proc.stdout.readline()
    if " on http://" not in line:
        proc.kill()
        raise RuntimeError(f"decaf serve did not start: {line}{proc.stderr.read()}")
    return proc, line.split(" on ", 1)[1].split()[0].rstrip("/")


def wait_healthy(httpx, url, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if httpx.get(url + "/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not become healthy")


def outcome(kind, response, answers, filename):
    """A short name for what happened to one request."""
    if response is None:
        return "transport_error"
    try:
        body = response.json()
    except ValueError:
        return f"http_{response.status_code}_not_json"
    if response.status_code != 200:
        return f"http_{response.status_code}_{body.get('error', {}).get('code', '?')}"
    result = body["results"][0]
    if "error" in result:
        return f"image_{result['error']['code']}"
    if kind == "good":
        return "ok" if result["top"][0]["index"] == answers[filename] else "wrong_answer"
    return "ok_unexpected"


BOUNDARY = "decaf-bench-boundary"


def multipart(filename, data):
    """One image as a multipart/form-data body, built once: the clients share the machine with the
    server, so they should spend as little of it as they can."""
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def client_loop(httpx, url, uploads, weights, deadline, seed, answers, record):
    rng = random.Random(seed)
    kinds = list(uploads)
    bodies = {kind: [(name, multipart(name, data)) for name, data in items] for kind, items in uploads.items()}
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    with httpx.Client(timeout=60) as client:
        while time.perf_counter() < deadline:
            kind = rng.choices(kinds, weights)[0]
            filename, body = rng.choice(bodies[kind])
            t0 = time.perf_counter()
            try:
                response = client.post(url + "/v1/classify?top=1", content=body, headers=headers)
            except httpx.HTTPError:
                response = None
            record(kind, outcome(kind, response, answers, filename), time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="pretrained name or .decaf file (default: the pretrained net)")
    ap.add_argument("--seconds", type=float, default=30, help="length of the load phase (default 30)")
    ap.add_argument("--batch-seconds", type=float, default=None, help="length of the batch reference "
                    "(default: a third of --seconds, at least 3)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--mix", default="0.8,0.1,0.1", help="good,bad,oversized request shares (default 0.8,0.1,0.1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--server-args", default="", help="more options for decaf serve, e.g. '--batch-wait-ms 20'")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    import httpx

    weights = [float(w) for w in args.mix.split(",")]
    tmp = tempfile.mkdtemp(prefix="bench_serve_")
    paths = save_photos(tmp)
    batch_seconds = args.batch_seconds or max(3.0, args.seconds / 3)
    print(f"batch reference: decaf.classify over {len(paths)} photos, batch 16, {batch_seconds:.0f} s ...", flush=True)
    batch_ips, answers = batch_reference(args.model, paths, batch_seconds, 16)

    rng = np.random.default_rng(args.seed)
    uploads = {
        "good": [(os.path.basename(p), open(p, "rb").read()) for p in paths],
        "bad": [("junk.jpg", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()),
                ("truncated.png", open(paths[0], "rb").read()[:2000])],
        "oversized": [("huge.png", open(paths[0], "rb").read() + b"\0" * (UPLOAD_LIMIT_MB * 1024 * 1024 + 1))],
    }
    proc, url = start_server(args.model, args.server_args.split())
    results = collections.defaultdict(list)
    lock = threading.Lock()

    def record(kind, what, seconds):
        with lock:
            results[(kind, what)].append(seconds)
    try:
        wait_healthy(httpx, url)
        with httpx.Client(timeout=60) as c:        # warm-up: every photo alone, then a full minibatch
            smallest = min(uploads["good"], key=lambda u: len(u[1]))
            for r in [c.post(url + "/v1/classify", files=[("image", u)]) for u in uploads["good"]] + [
                    c.post(url + "/v1/classify", files=[("image", smallest)] * 16)]:
                if r.status_code != 200 or any("error" in x for x in r.json()["results"]):
                    raise RuntimeError(f"warm-up request failed: {r.status_code} {r.text[:300]}")
        rss_before = rss_mb(proc.pid)
        print(f"load: {args.clients} clients for {args.seconds:.0f} s against {url} ...", flush=True)
        deadline = time.perf_counter() + args.seconds
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client_loop, args=(httpx, url, uploads, weights, deadline,
                                                               args.seed * 1000 + i, answers, record))
                   for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.seconds + 120)
        elapsed = time.perf_counter() - t0
        time.sleep(0.5)
        rss_after = rss_mb(proc.pid)
        health = httpx.get(url + "/healthz", timeout=10)
        health = {"status_code": health.status_code, **health.json()}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()

    good = results.get(("good", "ok"), [])
    good_failed = sum(len(v) for (kind, what), v in results.items() if kind == "good" and what != "ok")
    ms = np.asarray(good) * 1e3
    serve_ips = len(good) / elapsed
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "decaf": decaf.__version__,
                    "threads": decaf.get_num_threads()},
        "model": args.model or "pretrained default", "clients": args.clients, "seconds": elapsed,
        "mix": dict(zip(("good", "bad", "oversized"), weights)),
        "batch_images_per_s": batch_ips, "serve_good_images_per_s": serve_ips, "ratio": serve_ips / batch_ips,
        "good_latency_ms": {"p50": float(np.percentile(ms, 50)) if len(ms) else None,
                            "p99": float(np.percentile(ms, 99)) if len(ms) else None,
                            "max": float(ms.max()) if len(ms) else None},
        "good_failed": good_failed,
        "outcomes": {f"{kind}/{what}": len(v) for (kind, what), v in sorted(results.items())},
        "server_rss_mb": {"before": rss_before, "after": rss_after}, "health_after": health,
        "server_args": args.server_args,
    }
    print(f"\nbatch reference (decaf classify, batch 16): {batch_ips:7.2f} images/s")
    print(f"serve, {args.clients} clients, good images:      {serve_ips:7.2f} images/s  "
          f"(ratio {report['ratio']:.2f}; target >= 0.80)")
    lat = report["good_latency_ms"]
    if lat["p50"] is not None:
        print(f"good request latency: p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms")
    print(f"failed good requests: {good_failed}")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in report["outcomes"].items()))
    print(f"server RSS: {rss_before:.0f} MB before, {rss_after:.0f} MB after; healthz after: {health['status']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0 if good_failed == 0 and health["status_code"] == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
