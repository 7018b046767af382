"""decaf extract on this machine: one process vs a Dask LocalCluster of 1 and 2 workers, on the same cores.

    python benchmarks/bench_extract.py --images 20000 --json out.json          # the issue-16 benchmark
    python benchmarks/bench_extract.py --images 48 --shard 16 --model tiny     # a smoke run (seconds)

A folder of generated images (mixed sizes 160-640 px, JPEG and PNG, 1 % corrupt) is made once in
``--folder`` (kept, so later runs reuse it). Then, with the same model, batch and shard size, each
run extracts every image into a fresh Zarr store:

- ``single``: ``decaf.features.extract`` in this process with ``--threads`` decaf threads (all cores);
- ``workers=1``: a LocalCluster of one worker process with ``--threads`` decaf threads;
- ``workers=W``: W worker processes with ``--threads / W`` decaf threads each (the same cores).

Each figure is images/s over the extraction (the cluster is started before the clock, and its start
is reported apart: a long run pays it once). The overhead of the distributed path is
``single / workers-1 - 1`` (the same process count and threads: what Dask, task shipping and the
per-shard commits cost); ``workers=W`` against ``single`` says whether W processes of fewer threads
use the cores better than one process of all of them. The features of every run are compared with
the single-process run's (bit-identical when the thread count per process is the same; otherwise
within float rounding, and the largest difference is reported).

The model is ``--model`` (a pretrained name or .decaf file; default the pretrained default) or
``tiny`` (a small random conv net, for smoke runs without pretrained weights).
"""
import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout

TINY = {"name": "tiny", "inputs": {"data": [3, 64, 64]}, "layers": [
    {"name": "conv1", "type": "Convolution", "bottom": "data", "top": "conv1", "num_output": 16, "kernel_size": 5,
     "stride": 2},
    {"name": "relu1", "type": "ReLU", "bottom": "conv1", "top": "relu1"},
    {"name": "pool1", "type": "Pooling", "bottom": "relu1", "top": "pool1", "pool": "max", "kernel_size": 2,
     "stride": 2},
    {"name": "fc1", "type": "InnerProduct", "bottom": "pool1", "top": "fc1", "num_output": 64},
    {"name": "relu2", "type": "ReLU", "bottom": "fc1", "top": "relu2"},
    {"name": "fc2", "type": "InnerProduct", "bottom": "relu2", "top": "fc2", "num_output": 10}]}


def make_folder(folder, n, seed=0):
    """n images in 10 class folders (kept between runs: only the missing ones are made)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    made = 0
    for i in range(n):
        cls = f"class{i % 10}"
        os.makedirs(os.path.join(folder, cls), exist_ok=True)
        corrupt = i % 100 == 37                       # 1 %
        ext = "png" if i % 4 == 0 else "jpg"
        path = os.path.join(folder, cls, f"{i:07d}.{ext}")
        if os.path.exists(path):
            continue
        if corrupt:
            with open(path, "wb") as f:
                f.write(b"\xff\xd8\xff\xe0 corrupt" if ext == "jpg" else b"\x89PNG\r\n\x1a\n corrupt")
            continue
        h, w = (int(v) for v in rng.integers(160, 641, 2))
        # smooth noise: compresses like a photo, decodes at a realistic cost
        small = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        Image.fromarray(small).resize((w, h), Image.BILINEAR).save(path, quality=90)
        made += 1
    return made


def load_net(model, tmp):
    """(net, what workers load: a .decaf path or pretrained name)."""
    import decaf
    from decaf.pretrained import load_model
    if model == "tiny":
        path = os.path.join(tmp, "tiny.decaf")
        decaf.save(decaf.Net(TINY, seed=0), path, preprocess={"resize_shorter": 72, "crop": 64})
        return decaf.load(path), path
    return load_model(model), model


def run_single(net, folder, out, threads, batch, shard):
    from decaf.features import extract
    from decaf.threads import using_threads
    stats = {}
    with using_threads(threads):
        extract(net, folder, out=out, batch_size=batch, shard_size=shard, stats=stats)
    return stats


def run_cluster(net, model, folder, out, workers, threads, batch, shard):
    from dask.distributed import Client

    from decaf.distributed import extract_on_cluster, local_cluster
    t0 = time.perf_counter()
    cluster = local_cluster(workers, threads)
    client = Client(cluster)
    client.wait_for_workers(workers, timeout=120)
    start = time.perf_counter() - t0
    stats = {}
    try:
        extract_on_cluster(net, folder, out=out, model=model, batch_size=batch, shard_size=shard, client=client,
                           threads_per_worker=threads, stats=stats)
    finally:
        client.close()
        cluster.close()
    stats["cluster_start_seconds"] = start
    return stats


def compare(a, b):
    from decaf.features import load_features
    fa, fb = load_features(a), load_features(b)
    blob = fa["info"]["blobs"][0]
    same_rows = list(fa["paths"]) == list(fb["paths"]) and list(fa["skipped"]) == list(fb["skipped"])
    diff = float(np.max(np.abs(fa[blob] - fb[blob]))) if len(fa[blob]) else 0.0
    return {"same_images": same_rows, "identical": bool(same_rows and np.array_equal(fa[blob], fb[blob])),
            "max_abs_diff": diff}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "decaf-bench-extract"))
    parser.add_argument("--model", default=None, help="pretrained name, .decaf file, or 'tiny'")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="cores used by every run")
    parser.add_argument("--workers", type=int, default=2, help="the biggest LocalCluster (default 2)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--shard", type=int, default=256)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    folder = os.path.join(args.folder, str(args.images))
    t = time.perf_counter()
    made = make_folder(folder, args.images)
    print(f"{folder}: {args.images} images ({made} made in {time.perf_counter() - t:.1f} s)", file=sys.stderr)
    tmp = tempfile.mkdtemp(prefix="decaf-bench-extract-")
    try:
        net, model = load_net(args.model, tmp)
        runs = [("single", None, args.threads), ("workers=1", 1, args.threads)]
        if args.workers > 1:
            runs.append((f"workers={args.workers}", args.workers, max(1, args.threads // args.workers)))
        results = []
        for name, workers, threads in runs:
            out = os.path.join(tmp, f"{name}.zarr")
            if workers is None:
                stats = run_single(net, folder, out, threads, args.batch, args.shard)
            else:
                stats = run_cluster(net, model, folder, out, workers, threads, args.batch, args.shard)
            row = {"run": name, "workers": workers or 0, "threads_per_process": threads,
                   "images": stats["images"], "extracted": stats["extracted"], "skipped": stats["skipped"],
                   "seconds": round(stats["seconds"], 3),
                   "images_per_second": round(stats["computed_images"] / stats["seconds"], 2),
                   "cluster_start_seconds": round(stats.get("cluster_start_seconds", 0.0), 3)}
            if results:
                row.update(compare(os.path.join(tmp, "single.zarr"), out))
            results.append(row)
            print(f"{name:10s} {threads} thread(s)/process: {row['images_per_second']:8.1f} images/s "
                  f"({row['seconds']:.1f} s{', cluster start %.1f s' % row['cluster_start_seconds'] if workers else ''})"
                  + (f"; identical: {row['identical']}, max diff {row['max_abs_diff']:.2g}" if len(results) > 1
                     else ""), file=sys.stderr)
        rate = {r["run"]: r["images_per_second"] for r in results}
        summary = {"overhead_workers1_vs_single": round(rate["single"] / rate["workers=1"] - 1, 4)}
        if args.workers > 1:
            summary[f"speedup_workers{args.workers}_vs_single"] = round(
                rate[f"workers={args.workers}"] / rate["single"], 4)
        print(json.dumps(summary), file=sys.stderr)
        report = {"benchmark": "bench_extract", "model": args.model or "default", "images": args.images,
                  "batch": args.batch, "shard": args.shard, "threads": args.threads,
                  "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                              "python": platform.python_version()},
                  "results": results, "summary": summary}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
        print(json.dumps(report, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
