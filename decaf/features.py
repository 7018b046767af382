"""DeCAF features: any blobs of a net for many images, in minibatches, resumable.

    feats = extract(net, "photos/", blobs=["pool"], batch_size=32)
    feats["pool"]    # (N, 1280) float32, one row per readable image
    feats["paths"]   # (N,) relative paths, feats["labels"]: (N,) subfolder names
    feats["skipped"], feats["skipped_errors"]   # images that could not be read, and why

Sources (``collect_images``):

- a directory: every image file below it (by extension, hidden files left
  out), in sorted order. The label of ``DIR/cat/a/x.jpg`` is ``cat``, the first
  folder under ``DIR`` (files directly in ``DIR`` get the label ``""``).
- a list file (``.txt``, ``.lst``, ``.list``): one image per line, ``PATH`` or
  ``PATH LABEL`` (split at the last tab if there is one, else at the last
  space; a path with spaces needs a tab). Relative paths are relative to the
  list file; blank lines and lines starting with ``#`` are ignored.
- an image file: label ``""``.
- any of these as an fsspec URL (``s3://``, ``gs://``, ``memory://``...; ``decaf.remote``): listed
  and read through fsspec, the same labels and relative paths (``file://`` is a local path).

Paths in the output are relative to ``root``, the deepest folder holding all
the images (stored in the file as ``root``).

With ``out=`` the work is cut into shards of ``shard_size`` images. Each
finished shard is written (atomically) into ``OUT.parts/``; a run that is
killed leaves its finished shards there, and the next run with the same
images, net and blobs starts after them. When every shard is done they are
merged into ``OUT`` (a temporary file renamed over it, so ``OUT`` is never
half written) and ``OUT.parts/`` is removed. The ``.npz`` written is the same
byte for byte whether or not the run was interrupted (no timestamps inside).

Unreadable or corrupt images never stop the run: they are listed in
``skipped`` / ``skipped_errors`` and passed to ``on_error(path, message)``.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import socket
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from .pipeline import forward_batches, image_batches, image_input, net_recipe  # noqa: F401 (image_input: API)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
LIST_EXTENSIONS = {".txt", ".lst", ".list"}
RESERVED_KEYS = ("paths", "labels", "skipped", "skipped_errors", "root", "info")
SHARD_FORMAT = 1


class Item:
    """One image to extract: its path (or an in-memory PIL image), its path relative to the root, its label."""

    __slots__ = ("source", "relpath", "label")

    def __init__(self, source, relpath, label=""):
        self.source, self.relpath, self.label = source, relpath, label

    def __repr__(self):
        return f"Item({self.relpath!r}, label={self.label!r})"


# ---- sources -> items ------------------------------------------------------------


def _is_image_name(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk_images(directory):
    """(absolute path, label) for every image below ``directory``, sorted, hidden entries skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, directory)
        label = "" if rel == "." else Path(rel).parts[0]
        for name in sorted(filenames):
            if not name.startswith(".") and _is_image_name(name):
                found.append((os.path.join(dirpath, name), label))
    return found


def parse_list_lines(lines):
    """(image, label) for each line of a list file: ``PATH`` or ``PATH LABEL`` (split at the last tab if
    there is one, else at the last space); blank lines and ``#`` comments left out."""
    for line in lines:
        line = line.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" in line:
            image, label = line.rsplit("\t", 1)
        else:
            parts = line.strip().rsplit(None, 1)
            image, label = (parts[0], parts[1]) if len(parts) == 2 else (parts[0], "")
        yield image.strip(), label.strip()


def read_list_file(path):
    """(absolute path, label) for each line of a list file."""
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        return [(os.path.normpath(os.path.join(base, os.path.expanduser(image))), label)
                for image, label in parse_list_lines(f)]


def collect_images(sources):
    """A directory, list file or image path (or a list of them) -> (items, root).

    Duplicate paths keep their first occurrence. A missing directory or list
    file is a FileNotFoundError; an image path (by its extension) is kept even
    if it is missing or cannot be decoded: extraction skips and lists it.
    """
    from . import remote
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = [remote.local_path(s) for s in sources]         # file:// URLs are local paths
    if any(remote.is_url(s) for s in sources):
        return remote.collect_images(sources)                   # s3://, gs://, memory://... through fsspec
    found, roots = [], []
    for source in sources:
        source = os.path.abspath(os.fspath(source))
        if os.path.isdir(source):
            found += _walk_images(source)
            roots.append(source)
        elif os.path.splitext(source)[1].lower() in LIST_EXTENSIONS:
            if not os.path.isfile(source):
                raise FileNotFoundError(f"{source}: no such list file")
            found += read_list_file(source)
        elif os.path.lexists(source) or _is_image_name(source):
            found.append((source, ""))     # a missing image file is skipped and listed, like a broken one
        else:
            raise FileNotFoundError(f"{source}: no such file or directory")
    unique = first_of_each_path(found)
    dirs = [os.path.dirname(p) for p, _ in unique] + roots
    root = os.path.commonpath(dirs) if dirs else os.getcwd()
    items = [Item(p, Path(os.path.relpath(p, root)).as_posix(), label) for p, label in unique]
    return items, root


def first_of_each_path(found):
    """``found``'s (path, label) pairs without repeated paths, in order; a path's first label wins."""
    unique = {}
    for path, label in found:
        unique.setdefault(path, label)
    return list(unique.items())


def _as_items(images):
    """Whatever ``extract`` was given -> (items, root)."""
    if isinstance(images, (str, os.PathLike)):
        return collect_images(images)
    images = list(images)
    if all(isinstance(x, Item) for x in images):
        return images, ""
    if all(isinstance(x, (str, os.PathLike)) for x in images):
        return collect_images(images)
    from PIL import Image
    items = []
    for i, x in enumerate(images):
        if isinstance(x, Item):
            items.append(x)
        elif isinstance(x, Image.Image):
            items.append(Item(x, f"<image {i}>"))
        elif isinstance(x, (str, os.PathLike)):
            items.append(Item(os.path.abspath(os.fspath(x)), os.fspath(x)))
        else:
            raise TypeError(f"images[{i}]: expected a path, a PIL image or an Item, got {type(x).__name__}")
    return items, ""


# ---- the net side -------------------------------------------------------------------


def default_blob(net):
    """The blob a linear classifier reads: the input of the last layer with the "classifier" role
    (InnerProduct, or a convolution head), taken before a "train_only" layer (Dropout) on the way.

    EfficientNet-Lite0 -> ``pool`` (1280-d), CaffeNet -> ``relu7`` (DeCAF7 after ReLU), LeNet -> ``ip1``.
    """
    producer = {}
    for layer in net.order:
        for top in layer.top_names:
            producer.setdefault(top, layer)
    for layer in reversed(net.order):
        if "classifier" in layer.roles:
            blob = layer.bottom_names[0]
            source = producer.get(blob)
            if source is not None and "train_only" in source.roles and source.bottom_names[0] != blob:
                blob = source.bottom_names[0]
            return blob
    return net.output_names[-1]


def net_fingerprint(net):
    """sha256 over the net's spec and every parameter: a resumed run must use the same weights."""
    h = hashlib.sha256(json.dumps(net.spec, sort_keys=True, default=str).encode())
    for name in sorted(net.params):
        data = np.ascontiguousarray(net.params[name].data)
        h.update(f"{name}{data.dtype.str}{data.shape}".encode())
        h.update(memoryview(data).cast("B"))
    return h.hexdigest()


def _model_name(net):
    source = (getattr(net, "meta", None) or {}).get("source") or {}
    return source.get("file") or source.get("package") or net.name


# ---- deterministic npz -----------------------------------------------------------------


def _write_npz(path, members):
    """Write an uncompressed ``.npz`` atomically and reproducibly (fixed timestamps).

    ``members``: (name, dtype, shape, chunks) with ``chunks`` an iterable of arrays
    whose concatenation along axis 0 has ``shape``; a big array is written
    piece by piece, never held whole.
    """
    from .io.blobfile import _write_atomically    # the mode follows the umask (or the old file's)

    def write(raw):
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, dtype, shape, chunks in members:
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                dtype = np.dtype(dtype)
                with zf.open(info, "w", force_zip64=True) as f:
                    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                              "shape": tuple(shape)}
                    np.lib.format.write_array_header_1_0(f, header)
                    rows = 0
                    for chunk in chunks:
                        chunk = np.ascontiguousarray(chunk, dtype=dtype)
                        rows += chunk.shape[0] if chunk.ndim else 1
                        f.write(chunk.tobytes())
                    want = shape[0] if len(shape) else 1
                    if rows != want:
                        raise AssertionError(f"{name}: wrote {rows} rows, header says {want}")

    _write_atomically(os.fspath(path), write)


def _whole(name, array):
    array = np.asarray(array)
    return (name, array.dtype, array.shape, [array])


def _strings(values):
    """A unicode array (never object dtype, so np.load needs no pickle)."""
    return np.asarray(list(values), dtype=str) if len(values) else np.zeros(0, dtype="<U1")


# ---- one run per output -------------------------------------------------------------


class OutputLocked(RuntimeError):
    """Another run (this machine or another one sharing the folder) is writing the same output."""


class ShardError(RuntimeError):
    """A run cannot finish its output: shards missing after the run, a store taken over by another run,
    workers that see another model file."""


def _lock_path(out):
    out = os.path.abspath(os.fspath(out))
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.lock")


@contextlib.contextmanager
def output_lock(out):
    """Hold ``.OUT.lock`` next to ``out`` (an flock) for a run; a second run raises OutputLocked.

    The lock dies with its process (a killed run leaves no stale lock, the next one resumes). The
    file says who holds it; it is removed on release, and a taker checks that the file it locked is
    still the one at the path, so a release racing a take never gives two holders. flock works
    across machines on NFS v4 and most cluster file systems; see docs/scale.md for object stores.
    """
    path = _lock_path(out)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            finally:
                os.close(fd)
            raise OutputLocked(f"{os.fspath(out)} is being written by {holder} (lock {path}); wait for it "
                               "to finish, or write elsewhere") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)      # the holder released and removed it between our open and flock: again
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield path
    finally:
        try:
            os.unlink(path)
        finally:
            os.close(fd)


# ---- extraction --------------------------------------------------------------------------


class _Extractor:
    def __init__(self, net, blobs, batch_size, oversample, flatten):
        self.net, self.blobs = net, blobs
        self.batch_size, self.oversample, self.flatten = batch_size, oversample, flatten
        self.recipe = net_recipe(net)
        self.times = {"preprocess_seconds": 0.0, "forward_seconds": 0.0}

    def run(self, items, on_error=None, on_image=None):
        """Features for ``items``: ({blob: array or None}, good positions, [(position, message)])."""
        good, errors, parts = [], [], {b: [] for b in self.blobs}

        def bad(pos, item, message):
            prefix = f"{item.source}: "
            if message.startswith(prefix):   # the path is stored next to it; keep files relocatable
                message = message[len(prefix):]
            if isinstance(item.source, str):
                message = message.replace(item.source, item.relpath)
            errors.append((pos, message))
            if on_error:
                on_error(item.relpath, message)
            if on_image:
                on_image(1)

        from .remote import open_source
        stream = image_batches([open_source(item.source) for item in items], self.recipe, self.batch_size,
                               self.oversample, on_error=lambda pos, _, message: bad(pos, items[pos], message),
                               stats=self.times)
        for batch, out in forward_batches(self.net, stream, self.blobs, stats=self.times):
            for name, y in out.items():
                parts[name].append(y.reshape(len(y), -1) if self.flatten else y)
            good.extend(batch.positions)
            if on_image:
                on_image(len(batch))
        arrays = {name: np.concatenate(parts[name]) if parts[name] else None for name in self.blobs}
        return arrays, np.asarray(good, dtype=np.int64), errors


def _check_blobs(net, blobs):
    blobs = [blobs] if isinstance(blobs, str) else list(blobs or [default_blob(net)])
    if not blobs:
        raise ValueError("no blobs to extract")
    for name in blobs:
        if name not in net.blobs:
            raise KeyError(f"net {net.name!r} has no blob {name!r}; its blobs are {list(net.blobs)}")
        if name in RESERVED_KEYS:
            raise ValueError(f"blob name {name!r} clashes with an output key ({', '.join(RESERVED_KEYS)})")
    if len(set(blobs)) != len(blobs):
        raise ValueError(f"blob listed twice in {blobs}")
    return blobs


def extract(net, images, blobs=None, batch_size=32, oversample=False, flatten=True, out=None,
            shard_size=256, progress=False, on_error=None, on_shard=None, stats=None):
    """Extract ``blobs`` of ``net`` for ``images``; return a dict of arrays.

    images: a directory, list file or image path, a list of them, or a list of
        PIL images (see the module docstring for labels and relative paths).
    blobs: blob names (default: ``default_blob(net)``). Each comes back as
        float32, (N, D) with ``flatten`` (default) else (N, C, H, W).
    batch_size: rows per forward pass (images; crops with ``oversample``, whole images per batch).
        oversample: the mean over the 10 crops.
    out: a ``.npz`` path: work in shards of ``shard_size`` images, resume an
        interrupted run, write the result atomically (see the module docstring).
        A ``.zarr`` folder or an fsspec URL writes a feature store instead (``decaf.featstore``);
        the result's feature arrays are then lazy Dask arrays (``open_features``).
        One run per output: a second one raises OutputLocked.
    progress: show a tqdm bar on stderr. on_error(path, message): per skipped
        image. on_shard(done, total): after each shard is written (with ``out``).
    stats: a dict to fill with counts and timings of this run.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    blobs = _check_blobs(net, blobs)
    items, root = _as_items(images)
    if not items:
        raise ValueError("no images found (looked for files ending in "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
    extractor = _Extractor(net, blobs, batch_size, oversample, flatten)
    info = run_info(net, blobs, flatten, oversample)
    t0 = time.perf_counter()
    shards = [items[i:i + shard_size] for i in range(0, len(items), shard_size)]
    bar = _progress_bar(len(items), progress)
    done_images = 0
    resumed = 0
    try:
        if out is None:
            results = []
            for k, shard in enumerate(shards):
                arrays, good, errors = extractor.run(shard, on_error, bar.update if bar else None)
                results.append(_shard_arrays(arrays, good + k * shard_size, errors, k * shard_size, blobs))
                done_images += len(shard)
            merged = _merge_in_memory(results, blobs, extractor, net)
        else:
            sink = shard_sink(out, blobs)
            with sink.lock():      # one run per output: a second one refuses
                sink.prepare(_fingerprint(net, items, info, shard_size), items, root, info, shard_size,
                             blob_shapes(net, blobs, flatten))
                for k, shard in enumerate(shards):
                    if sink.done(k):
                        resumed += 1
                        if bar:
                            bar.update(len(shard))
                        _report(sink.errors(k), items, on_error)
                        continue
                    arrays, good, errors = extractor.run(shard, on_error, bar.update if bar else None)
                    sink.write(k, arrays, good, errors)
                    done_images += len(shard)
                    if on_shard:
                        on_shard(k + 1, len(shards))
                merged = sink.finish(items, root, info, len(shards))
    finally:
        if bar:
            bar.close()
    if out is None:
        merged = _finish(merged, blobs, items, root, info)
    if stats is not None:
        stats.update({"images": len(items), "extracted": int(len(merged["paths"])),
                      "skipped": int(len(merged["skipped"])), "computed_images": done_images,
                      "resumed_shards": resumed, "shards": len(shards), "batch_size": batch_size,
                      "seconds": time.perf_counter() - t0, **extractor.times})
    return merged


def run_info(net, blobs, flatten, oversample):
    """What an output stores as ``info`` (and what its fingerprint covers)."""
    return {"model": _model_name(net), "net": net.name, "blobs": list(blobs), "flatten": bool(flatten),
            "oversample": bool(oversample), "preprocess": net_recipe(net).to_dict(),
            "relu": {b: _relu_note(net, b) for b in blobs}}


def blob_shapes(net, blobs, flatten):
    """{blob: the shape of one image's features} (what a shard with no readable image stores)."""
    shapes = {}
    for name in blobs:
        shape = tuple(int(d) for d in net.blobs[name].shape[1:])
        shapes[name] = (int(np.prod(shape)),) if flatten else shape
    return shapes


def _report(errors, items, on_error):
    """A resumed shard reports its skipped images again, so the listing is complete."""
    if on_error is not None:
        for pos, message in errors:
            on_error(items[pos].relpath, message)


def _relu_note(net, blob):
    """"after ReLU", "before ReLU" (a rectifier reads it into a new blob) or "" for a blob."""
    writer = None
    for layer in net.order:      # the last layer writing the blob, an in-place train-only layer aside
        if blob in layer.top_names and not ("train_only" in layer.roles and blob in layer.bottom_names):
            writer = layer
    if writer is None:
        return ""
    if "rectifier" in writer.roles:
        return "after ReLU"
    if any("rectifier" in layer.roles and blob in layer.bottom_names for layer in net.order):
        return "before ReLU"
    return ""


def _progress_bar(total, progress):
    if not progress:
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="img", desc="extract", dynamic_ncols=True, smoothing=0.1)


def _shard_arrays(arrays, good, errors, offset, blobs):
    out = {"index": good, "error_index": np.asarray([p + offset for p, _ in errors], dtype=np.int64),
           "error_message": _strings([m for _, m in errors])}
    for name in blobs:
        out[f"blob.{name}"] = arrays[name]
    return out


def _fill_empty(arrays, shapes):
    """A shard with no readable image still stores (0, ...) arrays of the right width."""
    for name, shape in shapes.items():
        if arrays[f"blob.{name}"] is None:
            arrays[f"blob.{name}"] = np.zeros((0,) + tuple(shape), np.float32)
    return arrays


def _merge_in_memory(results, blobs, extractor, net):
    results = [_fill_empty(r, blob_shapes(net, blobs, extractor.flatten)) for r in results]
    merged = {name: np.concatenate([r[f"blob.{name}"] for r in results]) for name in blobs}
    merged["index"] = np.concatenate([r["index"] for r in results])
    merged["error_index"] = np.concatenate([r["error_index"] for r in results])
    merged["error_message"] = np.concatenate([r["error_message"] for r in results])
    return merged


def _finish(merged, blobs, items, root, info):
    good, bad = merged["index"], merged["error_index"]
    result = {name: merged[name] for name in blobs}
    result["paths"] = _strings([items[i].relpath for i in good])
    result["labels"] = _strings([items[i].label for i in good])
    result["skipped"] = _strings([items[i].relpath for i in bad])
    result["skipped_errors"] = _strings(list(merged["error_message"]))
    result["root"] = np.asarray(root)
    result["info"] = np.asarray(json.dumps(info, sort_keys=True))
    return result


# ---- shards on disk ----------------------------------------------------------------


def _work_dir(out):
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _fingerprint(net, items, info, shard_size):
    h = hashlib.sha256()
    h.update(json.dumps({"format": SHARD_FORMAT, "info": info, "shard_size": shard_size},
                        sort_keys=True, default=str).encode())
    h.update(net_fingerprint(net).encode())
    from .remote import is_url
    from .remote import stamp as url_stamp
    for item in items:
        try:
            st = os.stat(item.source)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except (OSError, TypeError, ValueError):
            stamp = url_stamp(item.source) if is_url(item.source) else "-"
        h.update(f"{item.source}\0{item.relpath}\0{item.label}\0{stamp}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _prepare_work_dir(work, fingerprint, n_items, shard_size):
    """Keep the shards of an interrupted run of the same job; anything else there is stale."""
    manifest = work / "manifest.json"
    if work.exists():
        try:
            old = json.loads(manifest.read_text())
        except (OSError, ValueError):
            old = None
        if not old or old.get("fingerprint") != fingerprint:
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if not manifest.exists():
        text = json.dumps({"fingerprint": fingerprint, "images": n_items, "shard_size": shard_size}, indent=1)
        fd, temp = tempfile.mkstemp(dir=work, prefix=".manifest.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(temp, manifest)


def _valid_shard(path, blobs):
    if not path.exists():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            need = {"index", "error_index", "error_message"} | {f"blob.{b}" for b in blobs}
            if not need <= keys:
                return False
            n = len(z["index"])
            return all(z[f"blob.{b}"].shape[0] == n for b in blobs)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError):
        return False


def _shard_errors(path):
    with np.load(path, allow_pickle=False) as z:
        return [(int(i), str(m)) for i, m in zip(z["error_index"], z["error_message"])]


class NpzShards:
    """Where the shards of a run into ``OUT.npz`` go: ``OUT.npz.parts/shard-K.npz``, merged at the end.

    The interface of every output (decaf.featstore.ZarrShards is the other): ``lock()`` for the run,
    ``prepare`` (keep an interrupted run's shards, drop anything else), ``done(k)``, ``errors(k)``,
    ``write(k, ...)`` (a worker may call it: the object is small and picklable) and ``finish``.
    """

    def __init__(self, out, blobs):
        self.out, self.blobs = os.fspath(out), list(blobs)
        # said now, not after every image has gone through the net
        if os.path.isdir(self.out):
            raise IsADirectoryError(f"{self.out}: is a directory; name a .npz file (or a .zarr store) as output")
        parent = os.path.dirname(os.path.abspath(self.out))
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"{self.out}: the folder {parent} does not exist")
        self.work, self.shard_size, self.shapes = _work_dir(out), None, None

    def lock(self):
        return output_lock(self.out)

    def prepare(self, fingerprint, items, root, info, shard_size, shapes):
        _prepare_work_dir(self.work, fingerprint, len(items), shard_size)
        self.shard_size, self.shapes = shard_size, shapes

    def path(self, k):
        return self.work / f"shard-{k:06d}.npz"

    def done(self, k):
        return _valid_shard(self.path(k), self.blobs)

    def errors(self, k):
        return _shard_errors(self.path(k))

    def write(self, k, arrays, good, errors):
        """Shard k's features: arrays {blob: rows of the good images}, good and errors positions in the shard."""
        offset = k * self.shard_size
        arrays = _fill_empty(_shard_arrays(arrays, good + offset, errors, offset, self.blobs), self.shapes)
        _write_npz(self.path(k), [_whole(name, a) for name, a in arrays.items()])

    def finish(self, items, root, info, n_shards):
        missing = [k for k in range(n_shards) if not self.done(k)]
        if missing:
            raise ShardError(f"{len(missing)} shards missing, e.g. {self.path(missing[0])} (with a cluster: "
                               "do the workers see the client's files?)")
        merged = _merge_shards(self.work, n_shards, self.blobs, items, root, info, self.out)
        shutil.rmtree(self.work, ignore_errors=True)
        return merged


def shard_sink(out, blobs):
    """The shard writer for ``out``: a Zarr store (a ``.zarr`` folder or an fsspec URL) or an ``.npz``."""
    from . import featstore
    if featstore.is_store(out):
        return featstore.ZarrShards(out, blobs)
    return NpzShards(out, blobs)


def _merge_shards(work, n_shards, blobs, items, root, info, out):
    """Stream the shards into the output file; return the result with the features loaded back."""
    paths = [work / f"shard-{k:06d}.npz" for k in range(n_shards)]
    good, bad, messages, rows, widths = [], [], [], 0, {}
    for p in paths:
        with np.load(p, allow_pickle=False) as z:
            good.append(z["index"])
            bad.append(z["error_index"])
            messages += list(z["error_message"])
            for name in blobs:
                widths[name] = (z[f"blob.{name}"].dtype, z[f"blob.{name}"].shape[1:])
    good, bad = np.concatenate(good), np.concatenate(bad)
    rows = len(good)

    def chunks(name):
        for p in paths:
            with np.load(p, allow_pickle=False) as z:
                yield z[f"blob.{name}"]

    meta = _finish({"index": good, "error_index": bad, "error_message": _strings(messages)}, [], items, root, info)
    members = [(name, widths[name][0], (rows,) + tuple(widths[name][1]), chunks(name)) for name in blobs]
    members += [_whole(k, meta[k]) for k in RESERVED_KEYS]
    _write_npz(out, members)
    with np.load(out, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_features(path):
    """An extracted ``.npz`` or feature store as a dict of NumPy arrays (``info`` decoded from JSON).

    Everything is read into memory; ``open_features`` reads a store lazily."""
    from . import featstore
    if featstore.is_store(path):
        return featstore.load_store(path)
    from .io.errors import DecafFormatError
    if not zipfile.is_zipfile(path):   # np.load would return an .npy's array or talk about pickles
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file")
        raise DecafFormatError(f"{path}: not a feature file (an .npz written by decaf extract, or a store)")
    with np.load(path, allow_pickle=False) as z:
        result = {k: z[k] for k in z.files}
    if "info" in result:
        result["info"] = json.loads(str(result["info"]))
    if "root" in result:
        result["root"] = str(result["root"])
    return result


def open_features(path):
    """Like ``load_features``, but a feature store's arrays come back as lazy Dask arrays (nothing read
    until computed; ``decaf.featstore.iter_chunks`` walks one shard at a time). An ``.npz`` is loaded."""
    from . import featstore
    if featstore.is_store(path):
        return featstore.open_store(path)
    return load_features(path)
