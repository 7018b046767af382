"""``decaf extract`` on a Dask cluster: the same shards, the same output, more machines.

    extract_on_cluster(net, "photos/", blobs=["pool"], out="feats.zarr", model="lenet.decaf", workers=2)
    extract_on_cluster(net, "list.txt", out="/shared/feats.zarr", model="/shared/caffenet.decaf",
                       scheduler="tcp://head:8786")

The image list is cut into the shards ``decaf.features.extract`` would cut (``shard_size`` images
each) and each shard not yet done becomes one Dask task. A task runs decaf's single-process code
(``features._Extractor``) on a worker and hands the result to the output's shard writer, the same
object the single-process run uses (``features.NpzShards``: ``OUT.npz.parts/shard-K.npz``, a
temporary file renamed into place; ``featstore.ZarrShards``: shard K's chunks, then its commit
``done/shard-K.json``), so a shard exists only when complete. The client holds the output's lock,
shows progress (images/s) and skipped images, and finishes the output as the single-process run
does: the ``.npz`` is the same file byte for byte, the store holds the same arrays, and an
interrupted run (distributed or not) resumes by computing only the shards missing.

Each worker process builds the net once, from ``model`` (a ``.decaf`` path or a pretrained name),
and keeps it in ``_NETS``; it checks the weights' fingerprint against the client's, so a worker that
sees another file at the same path fails loudly instead of mixing features. A killed worker is
Dask's to handle: the scheduler gives its task to another worker (up to
``distributed.scheduler.allowed-failures`` times); a task that raised is retried ``retries`` times.
Every worker must read the image paths and the model file at the paths the client gives, and
write the output (a shared file system, or a store URL such as ``s3://`` for the output).

Features are bit-identical to a single-process run with the same batch size and the same decaf
thread count per process (decaf's convolution blocks its GEMMs by images per thread, so the last
float bits depend on the thread count; docs/scale.md).
"""
import os
import threading
import time
import uuid

from . import features

# (model, blobs, thread) -> (fingerprint, Net), per worker process: the net is built once, not once per
# shard; a worker with several Dask threads gets one net per thread (a Net runs in one thread at a time)
_NETS = {}


# id(bytes) -> (the bytes, kept so that the id stays theirs; the file they were written to)
_SHIPPED = {}


def _model_file(data):
    """A shipped model's bytes as a file in this worker's temporary folder (written once, atomically).

    Every task of a run gets the same bytes object (the worker holds the broadcast data once)."""
    if id(data) not in _SHIPPED:
        import hashlib
        import tempfile
        path = os.path.join(tempfile.gettempdir(), f"decaf-model-{hashlib.sha256(data).hexdigest()[:32]}.decaf")
        if not os.path.exists(path):
            fd, temp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(temp, path)
        _SHIPPED.clear()            # one shipped model at a time: let the last one's bytes go
        _SHIPPED[id(data)] = (data, path)
    return _SHIPPED[id(data)][1]


def _worker_net(model, blobs, fingerprint, threads):
    """The net for ``model`` in this worker process, built on first use and checked against the client's.

    model: a ``.decaf`` path or pretrained name, or the bytes of a ``.decaf`` file (shipped)."""
    if threads is not None:
        from .threads import set_num_threads
        # one Dask thread per worker runs decaf, which uses ``threads`` of its own: together they fill
        # the cores given to this worker without oversubscribing them
        set_num_threads(threads)
    if isinstance(model, bytes):
        model = _model_file(model)      # then read (memory mapped) like any .decaf file
    key = (model, tuple(blobs), threading.get_ident())
    if key in _NETS and _NETS[key][0] != fingerprint:
        del _NETS[key]            # the file changed since: read it again
    if key not in _NETS:
        from .io import load_model
        net = load_model(model)
        _NETS[key] = (features.net_fingerprint(net), net)
    found, net = _NETS[key]
    if found != fingerprint:
        raise features.ShardError(f"worker pid {os.getpid()}: model {model!r} has weights {found[:12]}..., "
                                  f"the client's has {fingerprint[:12]}...; every worker must see the same "
                                  "model file")
    return net


def _compute_shard(model, weights, threads, sink, blobs, batch_size, oversample, flatten, k, shard):
    """Run on a worker: features for shard ``k`` (items as (source, relpath, label)), given to ``sink``.

    Returns a small summary for the client: the shard's skipped images (positions in the shard) and times."""
    net = _worker_net(model, blobs, weights, threads)
    items = [features.Item(*item) for item in shard]
    extractor = features._Extractor(net, blobs, batch_size, oversample, flatten)
    arrays, good, errors = extractor.run(items)
    sink.write(k, arrays, good, errors)
    return {"shard": k, "images": len(items), "errors": errors, "pid": os.getpid(), **extractor.times}


def local_cluster(workers, threads_per_worker, **kwargs):
    """A LocalCluster of ``workers`` processes, one Dask thread each, ``threads_per_worker`` decaf threads.

    Dask's nanny sets OMP_NUM_THREADS=1 (and MKL's, OpenBLAS's) in *this* process's environment before
    it starts a worker, and leaves them there: every later subprocess of the client (and an OpenMP
    runtime loaded after) would run on one thread. Here the worker processes get the thread settings in
    their own environment instead (``env``), and the client's stays as it was."""
    import dask
    from dask.distributed import LocalCluster
    threads = str(threads_per_worker or 1)
    env = {name: threads for name in ("DECAF_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                      "MKL_NUM_THREADS")}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {}}):
        # one Dask thread per process: decaf's kernels bring their own threads
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                            env=env, **kwargs)


def _connect(workers, scheduler, threads_per_worker):
    """(client, cluster or None): a client of ``scheduler``, or of a new LocalCluster of ``workers`` processes."""
    from dask.distributed import Client
    if scheduler:
        return Client(scheduler, timeout="30s"), None
    cluster = local_cluster(workers, threads_per_worker)
    return Client(cluster), cluster


def default_threads(workers):
    """decaf threads per worker on this machine: the cores shared out, at least one each."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def extract_on_cluster(net, images, out, model, blobs=None, batch_size=32, oversample=False, flatten=True,
                       shard_size=256, workers=None, scheduler=None, threads_per_worker=None, retries=3,
                       timeout=None, progress=False, on_error=None, on_shard=None, stats=None, client=None):
    """``features.extract(net, images, out=out, ...)`` with the shards computed on a Dask cluster.

    net: the model, loaded on the client (for the blob checks, the recipe and the fingerprint).
    model: how a worker loads the same net: a ``.decaf`` path every worker can read, a pretrained name,
        or the bytes of the ``.decaf`` file, sent once to every worker (workers without a shared file system).
    out: an ``.npz`` path, or a feature store (``.zarr`` folder or URL; see decaf.featstore).
    workers: start a LocalCluster of that many worker processes here; or scheduler: ``tcp://host:port``
        of a running cluster; or client: a ``dask.distributed.Client`` to use (left open).
    threads_per_worker: decaf's threads in each worker (default: the local cores / workers with
        ``workers``; else the workers' own setting, ``DECAF_NUM_THREADS``).
    retries: how many times a shard whose task raised is tried again (a killed worker's shard is
        rescheduled by Dask itself). timeout: seconds for the whole run (None: no limit).
    on_shard(done, total), on_error(path, message), stats: as in ``features.extract``.
    Returns what ``features.extract`` returns for ``out``.
    """
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be at least 1, got {batch_size} and {shard_size}")
    if client is None and not scheduler and not (workers and workers >= 1):
        raise ValueError("give workers= (a LocalCluster) or scheduler= (tcp://host:port) or client=")
    if os.fspath(out).startswith("memory://"):
        raise ValueError(f"{out}: a memory:// store lives in one process; workers cannot write to it")
    blobs = features._check_blobs(net, blobs)
    items, root = features._as_items(images)
    if not items:
        raise ValueError("no images found")
    inline = [it.relpath for it in items if not isinstance(it.source, (str, os.PathLike))]
    if inline:
        raise TypeError(f"a cluster reads images from paths; {inline[0]!r} is an in-memory image")
    if str(items[0].source).startswith("memory://"):
        raise ValueError(f"{items[0].source}: memory:// images live in one process; workers cannot read them")
    if threads_per_worker is None and workers and not scheduler and client is None:
        threads_per_worker = default_threads(workers)
    if isinstance(model, (bytes, bytearray, memoryview)):
        model = bytes(model)
    elif os.path.exists(model):
        model = os.path.abspath(model)
    info = features.run_info(net, blobs, flatten, oversample)
    t0 = time.perf_counter()
    weights = features.net_fingerprint(net)
    shards = [items[i:i + shard_size] for i in range(0, len(items), shard_size)]
    sink = features.shard_sink(out, blobs)
    totals = {"preprocess_seconds": 0.0, "forward_seconds": 0.0}
    done_images, pids, missing = 0, set(), []
    with sink.lock():          # one run per output, distributed or not: a second one refuses
        sink.prepare(features._fingerprint(net, items, info, shard_size), items, root, info, shard_size,
                     features.blob_shapes(net, blobs, flatten))
        missing = [k for k in range(len(shards)) if not sink.done(k)]
        t_connect = time.perf_counter()
        own_client, cluster = (client, None) if client is not None else _connect(workers, scheduler,
                                                                                 threads_per_worker)
        connect_seconds = time.perf_counter() - t_connect
        if progress:
            import sys
            n = len(own_client.scheduler_info().get("workers", {}))
            print(f"dask: {n} workers at {own_client.scheduler.address}, dashboard {own_client.dashboard_link}; "
                  f"{len(missing)} of {len(shards)} shards to compute", file=sys.stderr)
        bar = features._progress_bar(len(items), progress)      # after the cluster's start: a true rate
        futures = []
        try:
            for k in sorted(set(range(len(shards))) - set(missing)):   # resumed: report their skipped images
                features._report(sink.errors(k), items, on_error)
                if bar:
                    bar.update(len(shards[k]))
            run = uuid.uuid4().hex[:8]
            # shipped model bytes go to every worker once, not once per task
            shipped = own_client.scatter(model, broadcast=True, hash=False) if isinstance(model, bytes) else model
            for k in missing:
                shard = [(os.fspath(it.source), it.relpath, it.label) for it in shards[k]]
                futures.append(own_client.submit(
                    _compute_shard, shipped, weights, threads_per_worker, sink, blobs, batch_size, oversample,
                    flatten, k, shard, retries=retries, pure=False, key=f"decaf-shard-{k:06d}-{run}"))
            from dask.distributed import as_completed
            for n, future in enumerate(as_completed(futures, timeout=timeout), 1):
                result = future.result()          # a shard that failed every try raises here, naming its error
                offset = result["shard"] * shard_size
                features._report([(offset + pos, m) for pos, m in result["errors"]], items, on_error)
                for name in totals:
                    totals[name] += result[name]
                done_images += result["images"]
                pids.add(result["pid"])
                if bar:
                    bar.update(result["images"])
                if on_shard:
                    on_shard(len(shards) - len(missing) + n, len(shards))
            merged = sink.finish(items, root, info, len(shards))
        finally:
            for future in futures:
                future.cancel()
            if bar:
                bar.close()
            if client is None:
                own_client.close()
                if cluster is not None:
                    cluster.close()
    if stats is not None:
        stats.update({"images": len(items), "extracted": int(len(merged["paths"])),
                      "skipped": int(len(merged["skipped"])), "computed_images": done_images,
                      "computed_shards": len(missing), "resumed_shards": len(shards) - len(missing),
                      "shards": len(shards), "batch_size": batch_size, "seconds": time.perf_counter() - t0,
                      "worker_pids": sorted(pids), "threads_per_worker": threads_per_worker,
                      "cluster_start_seconds": connect_seconds, **totals})
    return merged


# ---- the command line: decaf extract --workers N / --scheduler ADDRESS ---------------------------------


def add_arguments(parser):
    """The 'cluster' flag group of ``decaf extract``."""
    group = parser.add_argument_group("Dask cluster (pip install 'decaf[dist]'; docs/scale.md)")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, metavar="N",
                       help="compute the shards on a LocalCluster of N worker processes on this machine")
    where.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                       help="compute the shards on a running Dask cluster (workers must see SRC, OUT and "
                            "the --model file at the same paths)")
    group.add_argument("--threads-per-worker", type=int, default=None, metavar="T",
                       help="decaf threads in each worker (default: cores / N with --workers; with "
                            "--scheduler the workers' own DECAF_NUM_THREADS)")
    group.add_argument("--ship-model", action="store_true",
                       help="send the --model .decaf file to every worker (workers without a shared file system)")
    group.add_argument("--retries", type=int, default=3, help="tries again for a shard whose task failed (3)")
    group.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                       help="give up when the whole run takes longer (default: no limit)")


def wants_cluster(args):
    return getattr(args, "workers", None) is not None or bool(getattr(args, "scheduler", None))


def cluster_extract(args):
    """``extract_on_cluster`` set up from --workers/--scheduler/--model: called like ``features.extract``."""
    import functools

    from .pretrained import DEFAULT_MODEL
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.threads_per_worker is not None and args.threads_per_worker < 1:
        raise ValueError(f"--threads-per-worker must be at least 1, got {args.threads_per_worker}")
    if args.retries < 0:
        raise ValueError(f"--retries must be 0 or more, got {args.retries}")
    if args.timeout is not None and not args.timeout > 0:     # (Dask read -1 as the text '1-1.0')
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ValueError("--workers and --scheduler need Dask: pip install 'decaf[dist]'") from None
    model = args.model or DEFAULT_MODEL
    if args.ship_model:
        if not os.path.isfile(model):
            raise ValueError(f"--ship-model sends a .decaf file; {model!r} is not one (convert it with "
                             "'decaf convert' first)")
        with open(model, "rb") as f:
            model = f.read()
    return functools.partial(extract_on_cluster, model=model, workers=args.workers,
                             scheduler=args.scheduler, threads_per_worker=args.threads_per_worker,
                             retries=args.retries, timeout=args.timeout)
