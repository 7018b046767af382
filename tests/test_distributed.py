"""decaf.distributed / decaf extract --workers|--scheduler on a 2-process Dask LocalCluster.

The reference is decaf.features.extract in this process with one decaf thread, the thread count of
each worker (the convolution's last float bits depend on it, docs/scale.md). One LocalCluster serves
the module (starting worker processes is the slow part); the CLI test starts its own through
--workers. Every wait on the cluster is bounded.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

distributed = pytest.importorskip("distributed")
pytest.importorskip("zarr")

from decaf import Net, load, save  # noqa: E402
from decaf.cli import main  # noqa: E402
from decaf.distributed import extract_on_cluster, local_cluster  # noqa: E402
from decaf.features import OutputLocked, ShardError, extract, load_features, output_lock  # noqa: E402
from decaf.threads import using_threads  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"name": "tiny", "inputs": {"data": [3, 16, 16]}, "layers": [
    {"name": "conv1", "type": "Convolution", "bottom": "data", "top": "conv1", "num_output": 4, "kernel_size": 3},
    {"name": "relu1", "type": "ReLU", "bottom": "conv1", "top": "relu1"},
    {"name": "pool1", "type": "Pooling", "bottom": "relu1", "top": "pool1", "pool": "max", "kernel_size": 2,
     "stride": 2},
    {"name": "fc1", "type": "InnerProduct", "bottom": "pool1", "top": "fc1", "num_output": 8},
    {"name": "relu2", "type": "ReLU", "bottom": "fc1", "top": "relu2"},
    {"name": "fc2", "type": "InnerProduct", "bottom": "relu2", "top": "fc2", "num_output": 3}]}
SHARD = 5            # 42 images -> 9 shards
CORRUPT = ("a/07_broken.jpg", "b/23_truncated.png")   # in different shards
WAIT = 60            # seconds: the bound of every wait on the cluster
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "DECAF_NUM_THREADS")
THREADS_BEFORE = {k: os.environ.get(k) for k in THREAD_VARIABLES}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.decaf"
    save(Net(TINY, seed=3), path, preprocess={"resize_shorter": 18, "crop": 16})
    return str(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """a/ and b/ with 40 images of mixed sizes and formats, and two corrupt files."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(40):
        sub = root / ("a" if i < 20 else "b")
        sub.mkdir(exist_ok=True)
        size = (17 + i % 9, 16 + (i * 7) % 13)
        Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(
            sub / f"{i:02d}.{'png' if i % 3 else 'jpg'}")
    (root / CORRUPT[0]).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = (root / "b" / "22.png").read_bytes()
    (root / CORRUPT[1]).write_bytes(good[:len(good) // 2])
    return root


SLOW_SHARD = 3       # 26 items -> 9 shards
SLOW_CORRUPT = ["bad.png", "bad2.jpg"]


@pytest.fixture(scope="module")
def slow_list(tmp_path_factory):
    """24 hard links to one 768 x 768 noise PNG and two corrupt files in different shards, as a list
    file: shards slow enough (~0.1 s) to kill a worker while it computes one."""
    root = tmp_path_factory.mktemp("slow")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (768, 768, 3), dtype=np.uint8)).save(root / "big.png")
    lines = []
    for i in range(24):
        os.link(root / "big.png", root / f"big{i:02d}.png")
        lines.append(f"big{i:02d}.png {'even' if i % 2 == 0 else 'odd'}")
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "bad2.jpg").write_bytes(b"")
    lines.insert(4, "bad.png odd")
    lines.insert(20, "bad2.jpg even")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return root / "list.txt"


@pytest.fixture(scope="module")
def slow_reference(model, slow_list, tmp_path_factory):
    return single_process(model, slow_list, tmp_path_factory.mktemp("slowref") / "ref.npz", shard=SLOW_SHARD)


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(2, 1) as cluster:
        with distributed.Client(cluster, timeout=f"{WAIT}s") as client:
            client.wait_for_workers(2, timeout=WAIT)
            yield cluster, client


def single_process(model, images, out, shard=SHARD):
    """The reference: one process, one decaf thread (as in each worker)."""
    with using_threads(1):
        extract(load(model), images, out=str(out), shard_size=shard, batch_size=4)
    return out


@pytest.fixture(scope="module")
def reference(model, folder, tmp_path_factory):
    return single_process(model, folder, tmp_path_factory.mktemp("ref") / "ref.npz")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run(cluster, model, images, out, shard=SHARD, **kwargs):
    _, client = cluster
    stats = {}
    extract_on_cluster(load(model), images, out=str(out), model=model, shard_size=shard, batch_size=4,
                       client=client, stats=stats, timeout=WAIT, **kwargs)
    return stats


def same_features(a, b):
    """Two outputs (.npz or store) hold the same features bit for bit, the same paths, labels, skipped."""
    a, b = load_features(a), load_features(b)
    assert sorted(a) == sorted(b)
    for key in a:
        if key in ("info", "root"):
            assert a[key] == b[key]
        else:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            assert np.array_equal(a[key], b[key]), key


def _executing(dask_worker):
    return len(dask_worker.state.executing)


def wait_idle(client):
    """Until no worker runs a task (a dead client's running tasks finish on their own)."""
    deadline = time.monotonic() + WAIT
    while any(client.processing().values()) or any(client.run(_executing).values()):
        assert time.monotonic() < deadline, "the cluster stayed busy"
        time.sleep(0.05)


def test_cli_workers_flag(model, folder, reference, tmp_path, capsys):
    """First in the file: its LocalCluster starts before the module's."""
    out = tmp_path / "cli.zarr"
    code = main(["extract", str(folder), "--model", model, "--blob", "relu2", "--batch", "4", "--shard",
                 str(SHARD), "-o", str(out), "--workers", "2", "--threads-per-worker", "1", "--quiet", "--ship-model",
                 "--timeout", str(WAIT)])
    assert code == 0
    assert "40 images, relu2 8 (after ReLU); 2 skipped" in capsys.readouterr().out
    same_features(out, reference)
    # Dask's nanny would leave OMP_NUM_THREADS=1 in this process's environment: not here
    assert {k: os.environ.get(k) for k in THREAD_VARIABLES} == THREADS_BEFORE


def test_same_output_as_one_process_and_corrupt_images_listed(cluster, model, folder, reference, tmp_path):
    skipped = []
    stats = run(cluster, model, folder, tmp_path / "d.npz", on_error=lambda p, m: skipped.append((p, m)))
    assert sha256(tmp_path / "d.npz") == sha256(reference)     # features, paths, labels, info: bit-identical
    assert not (tmp_path / "d.npz.parts").exists() and not (tmp_path / ".d.npz.lock").exists()
    feats = load_features(tmp_path / "d.npz")
    assert sorted(feats["skipped"]) == sorted(CORRUPT) and all(feats["skipped_errors"])
    assert sorted(p for p, _ in skipped) == sorted(CORRUPT)
    assert len(feats["paths"]) == 40 and len(set(feats["paths"])) == 40
    assert feats["relu2"].shape == (40, 8) and feats["relu2"].dtype == np.float32
    assert stats["computed_shards"] == stats["shards"] == 9 and stats["computed_images"] == 42
    assert len(stats["worker_pids"]) == 2 and os.getpid() not in stats["worker_pids"]
    # the same run into a Zarr store: the same arrays
    stats = run(cluster, model, folder, tmp_path / "d.zarr")
    same_features(tmp_path / "d.zarr", reference)
    assert stats["extracted"] == 40 and stats["skipped"] == 2
    # the model shipped to the workers as bytes (no shared file system for it): the same again
    _, client = cluster
    with open(model, "rb") as f:
        data = f.read()
    extract_on_cluster(load(model), folder, out=str(tmp_path / "s.zarr"), model=data, shard_size=SHARD,
                       batch_size=4, client=client, timeout=WAIT)
    same_features(tmp_path / "s.zarr", reference)


def busy_worker_killer(client):
    """on_shard(done, total) that SIGKILLs, once, a worker the scheduler says is running a shard; the list
    it returns holds (pid, done, total, the worker's keys) once it has."""
    killed = []

    def kill(done, total):
        if killed or done >= total:
            return
        busy = [(addr, keys) for addr, keys in client.processing().items() if keys]
        if busy:
            addr, keys = busy[0]
            pid = client.run(os.getpid, workers=[addr])[addr]
            os.kill(pid, signal.SIGKILL)
            killed.append((pid, done, total, list(keys)))
    return kill, killed


def test_worker_killed_mid_run_still_every_image_once(cluster, model, slow_list, slow_reference, tmp_path):
    _, client = cluster
    kill, killed = busy_worker_killer(client)
    skipped = []
    stats = run(cluster, model, slow_list, tmp_path / "k.zarr", shard=SLOW_SHARD, on_shard=kill,
                on_error=lambda p, m: skipped.append(p))
    assert killed and killed[0][1] < killed[0][2]        # killed while shards were still to come
    assert any(key.startswith("decaf-shard-") for key in killed[0][3])   # ... one of them on that worker
    assert stats["computed_shards"] == stats["shards"] == 9
    feats = load_features(tmp_path / "k.zarr")
    assert len(feats["paths"]) == 24 and len(set(feats["paths"])) == 24 and sorted(skipped) == SLOW_CORRUPT
    same_features(tmp_path / "k.zarr", slow_reference)
    client.wait_for_workers(2, timeout=WAIT)             # the nanny brings the killed worker back


def markers_in(out):
    """The commit markers done/shard-K.json, as the store reads them: a worker SIGKILLed while it wrote
    a marker leaves its temporary file (.XXXX.tmp, complete JSON or not) in done/, and a straggling
    duplicate of a task may be writing one right then; neither is a marker."""
    return [n for n in os.listdir(out / "done") if n.startswith("shard-") and n.endswith(".json")]


def test_client_killed_then_resumed_with_a_worker_killed(cluster, model, slow_list, slow_reference, tmp_path):
    """The issue's scenario: a client process SIGKILLs itself after its third shard; the next run computes
    only the missing shards, a worker is SIGKILLed while it does, and the result equals one process's."""
    cl, client = cluster
    out = tmp_path / "r.zarr"
    script = textwrap.dedent(f"""
        import os, signal
        from decaf import load
        from decaf.distributed import extract_on_cluster

        def die(done, total):
            if done == 3:
                os.kill(os.getpid(), signal.SIGKILL)

        extract_on_cluster(load({model!r}), {str(slow_list)!r}, out={str(out)!r}, model={model!r},
                           shard_size={SLOW_SHARD}, batch_size=4, scheduler={cl.scheduler_address!r},
                           timeout={WAIT}, on_shard=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    wait_idle(client)                         # shards running when the client died may still land
    done = {name: os.stat(out / "done" / name).st_mtime_ns for name in markers_in(out)}
    assert 3 <= len(done) <= 6
    with pytest.raises(ValueError, match="not complete"):
        load_features(out)                    # an interrupted store is refused, not half read
    skipped = []
    kill, killed = busy_worker_killer(client)
    stats = run(cluster, model, slow_list, out, shard=SLOW_SHARD, on_shard=kill,
                on_error=lambda p, m: skipped.append(p))
    assert killed and killed[0][1] < killed[0][2]
    assert stats["resumed_shards"] == len(done) and stats["computed_shards"] == 9 - len(done)
    assert {name: os.stat(out / "done" / name).st_mtime_ns for name in done} == done   # not computed again
    markers = {name: json.loads((out / "done" / name).read_text()) for name in markers_in(out)}
    assert sorted(m["shard"] for m in markers.values()) == list(range(9))
    assert stats["computed_images"] == 26 - sum(markers[name]["images"] for name in done)
    assert sorted(skipped) == SLOW_CORRUPT          # skipped images of resumed shards are reported too
    same_features(out, slow_reference)
    client.wait_for_workers(2, timeout=WAIT)


def test_workers_with_another_model_file_fail_loudly(cluster, model, folder, tmp_path):
    other = tmp_path / "other.decaf"
    save(Net(TINY, seed=4), other, preprocess={"resize_shorter": 18, "crop": 16})
    _, client = cluster
    with pytest.raises(ShardError, match="every worker must see the same model file"):
        extract_on_cluster(load(model), folder, out=str(tmp_path / "o.zarr"), model=str(other), shard_size=SHARD,
                           client=client, retries=0, timeout=WAIT)


def test_two_runs_into_one_output_refuse(cluster, model, folder, tmp_path, capsys):
    out = tmp_path / "locked.npz"
    with output_lock(out):                    # another run holds the output
        with pytest.raises(OutputLocked, match=f"pid {os.getpid()}"):
            run(cluster, model, folder, out)
        with pytest.raises(OutputLocked):
            extract(load(model), folder, out=str(out), shard_size=SHARD)
        assert main(["extract", str(folder), "--model", model, "-o", str(out), "--quiet", "--workers", "1"]) == 1
        err = capsys.readouterr().err
        assert "is being written by" in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "locked.npz.parts").exists()      # the refused runs wrote nothing
    run(cluster, model, folder, out)          # released: the next run goes through
    assert len(load_features(out)["paths"]) == 40


def test_refusals(model, folder, tmp_path, capsys):
    with pytest.raises(ValueError, match="workers="):
        extract_on_cluster(load(model), folder, out=str(tmp_path / "x.npz"), model=model)
    with pytest.raises(ValueError, match="memory://"):
        extract_on_cluster(load(model), folder, out="memory://x.zarr", model=model, workers=2)
    import fsspec
    fsspec.filesystem("memory").pipe("/cluster-refusal/a.png", (folder / "a" / "00.jpg").read_bytes())
    with pytest.raises(ValueError, match="memory:// images live in one process"):
        extract_on_cluster(load(model), "memory:///cluster-refusal", out=str(tmp_path / "m.zarr"), model=model,
                           workers=2)
    with pytest.raises(SystemExit):
        main(["extract", str(folder), "-o", str(tmp_path / "x.npz"), "--workers", "2", "--scheduler", "tcp://x:1"])
    assert main(["extract", str(folder), "-o", str(tmp_path / "x.npz"), "--workers", "0"]) == 1
    assert "--workers must be at least 1" in capsys.readouterr().err
    for flags, message in ((["--retries", "-1"], "--retries must be 0 or more, got -1"),
                           (["--timeout", "-1"], "--timeout must be a positive number of seconds, got -1.0")):
        assert main(["extract", str(folder), "-o", str(tmp_path / "x.npz"), "--workers", "1", *flags]) == 1
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_issue_scenario_on_a_few_hundred_mixed_images(cluster, model, tmp_path_factory, tmp_path):
    """The issue's 'done when' at its size: 300 generated images (sizes 16-400 px; PNG, JPEG, BMP, GIF,
    WebP, grey and RGBA), 1 % corrupt, on the 2-worker cluster: client SIGKILLed mid-run, resumed while a
    worker is SIGKILLed; the store equals the single-process run. `pytest -m slow` (10-20 s)."""
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(7)
    formats = [("png", "RGB"), ("jpg", "RGB"), ("bmp", "RGB"), ("gif", "P"), ("webp", "RGB"), ("png", "L"),
               ("png", "RGBA")]
    corrupt = []
    for i in range(300):
        ext, mode = formats[i % len(formats)]
        path = root / f"class{i % 5}" / f"{i:03d}.{ext}"
        path.parent.mkdir(exist_ok=True)
        if i % 100 == 42:
            path.write_bytes(rng.integers(0, 255, 64, dtype=np.uint8).tobytes())     # 1 % corrupt
            corrupt.append(path.relative_to(root).as_posix())
            continue
        h, w = (int(v) for v in rng.integers(16, 401, 2))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode).save(path)
    reference = single_process(model, root, tmp_path / "ref.npz", shard=16)
    cl, client = cluster
    out = tmp_path / "mixed.zarr"
    script = textwrap.dedent(f"""
        import os, signal
        from decaf import load
        from decaf.distributed import extract_on_cluster

        def die(done, total):
            if done == 6:
                os.kill(os.getpid(), signal.SIGKILL)

        extract_on_cluster(load({model!r}), {str(root)!r}, out={str(out)!r}, model={model!r}, shard_size=16,
                           batch_size=4, scheduler={cl.scheduler_address!r}, timeout={WAIT}, on_shard=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=WAIT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    wait_idle(client)
    done = len(os.listdir(out / "done"))
    kill, killed = busy_worker_killer(client)
    skipped = []
    stats = run(cluster, model, root, out, shard=16, on_shard=kill, on_error=lambda p, m: skipped.append(p))
    assert killed and stats["resumed_shards"] == done and stats["computed_shards"] == 19 - done
    assert sorted(skipped) == sorted(corrupt) and len(corrupt) == 3
    same_features(out, reference)
    client.wait_for_workers(2, timeout=WAIT)
