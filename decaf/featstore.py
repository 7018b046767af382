"""Feature stores: the features of a big run as a Zarr v3 group, written shard by shard, read lazily.

    extract(net, "photos/", out="feats.zarr")            # or out="s3://bucket/feats.zarr", "memory://f.zarr"
    feats = open_features("feats.zarr")                  # decaf.features: lazy Dask arrays
    feats["relu7"]                                       # dask.array (N, 4096) float32, nothing read yet
    for X, labels in iter_chunks("feats.zarr", "relu7"): # one shard in memory at a time
        ...

An output is a store when its name ends in ``.zarr`` or it is a URL (``file://``, ``s3://``,
``gs://``, ``memory://``: anything fsspec opens). Layout (docs/scale.md says why Zarr):

    zarr.json              attributes["decaf_features"]: format, fingerprint, images, shard_size,
                           blobs, shapes, root, info, complete
    features/BLOB          (images, ...) float32 in chunks of shard_size rows: row i is image i of
                           the list; the rows of skipped images stay zero (never read through the API)
    items/path, items/label   every image of the list: path relative to root, label
    done/shard-K.json      written after shard K's chunks, by whoever computed it: the shard's commit
                           (its skipped images and why). A shard without it is computed again.
    index                  the rows of the readable images, written at the end with
    skipped/index, skipped/error   the images that could not be read, and why

Shard K owns rows [K S, (K+1) S) of every array, whole chunks, so workers never write the same
object. The store is complete (``complete``: true) once ``index`` is written; readers refuse an
incomplete one, and ``decaf extract`` resumes it (the same images, net and settings: same
fingerprint) or starts it again (anything else).
"""
import contextlib
import json
import os
import tempfile

import numpy as np

FORMAT = 1
KEY = "decaf_features"
ROWS_PER_STRING_CHUNK = 1 << 16


def is_store(out):
    """Is ``out`` a feature store (a ``.zarr`` folder or a URL) rather than an ``.npz`` file?"""
    out = os.fspath(out).rstrip("/")
    if "://" in out:
        return True
    return out.endswith(".zarr") or os.path.isfile(os.path.join(out, "zarr.json"))


def store_url(out):
    """What zarr and fsspec are given: an absolute local path, or the URL (``file://`` made a path)."""
    out = os.fspath(out).rstrip("/")
    if out.startswith("file://"):
        return out[len("file://"):]
    return out if "://" in out else os.path.abspath(out)


def is_local(url):
    return "://" not in url


def _fs(url):
    import fsspec
    return fsspec.core.url_to_fs(url)


def _open(url, mode):
    import zarr
    return zarr.open_group(url, mode=mode)


def read_meta(url):
    """The store's ``decaf_features`` attributes; None when nothing is there; an error for something else."""
    fs, path = _fs(url)
    if not fs.exists(path):
        return None
    if not fs.exists(f"{path}/zarr.json"):
        if fs.isdir(path) and not fs.ls(path):
            return None       # an empty folder: ours to fill
        raise FileExistsError(f"{url} exists and is not a feature store; choose another output")
    meta = dict(_open(url, "r").attrs).get(KEY)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise FileExistsError(f"{url} is a Zarr group but not a decaf feature store (format {FORMAT}); "
                              "choose another output")
    return meta


def _put(url, key, data):
    """Write ``data`` (bytes) at ``url/key`` so that it appears whole or not at all."""
    if is_local(url):
        target = os.path.join(url, key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
    else:
        fs, path = _fs(url)
        fs.pipe_file(f"{path}/{key}", data)    # one PUT: object stores show an object whole or not at all


def _marker_key(k):
    return f"done/shard-{k:06d}.json"


def _read_markers(url, fingerprint):
    """{shard: marker} for the commits of this run's shards present in the store."""
    fs, path = _fs(url)
    try:
        names = fs.ls(f"{path}/done", detail=False)
    except FileNotFoundError:
        return {}
    names = [n for n in names if n.rsplit("/", 1)[-1].startswith("shard-") and n.endswith(".json")]
    markers = {}
    for name, data in fs.cat(names, on_error="omit").items():
        try:
            marker = json.loads(data)
        except ValueError:
            continue
        if isinstance(marker, dict) and marker.get("fingerprint") == fingerprint:
            markers[int(marker["shard"])] = marker
    return markers


def _strings(values):
    return np.asarray(list(values), dtype=str) if len(values) else np.zeros(0, dtype="<U1")


def _string_array(group, name, values):
    values = _strings(values)
    array = group.create_array(name, shape=values.shape, dtype=str,
                               chunks=(max(1, min(len(values), ROWS_PER_STRING_CHUNK)),), overwrite=True)
    if len(values):
        array[:] = values
    return array


class ZarrShards:
    """The shard writer of a feature store (the interface of ``decaf.features.NpzShards``)."""

    def __init__(self, out, blobs):
        self.url, self.blobs = store_url(out), list(blobs)
        self.fingerprint = self.shard_size = self.images = self.shapes = None
        self._markers = {}

    def __getstate__(self):        # what a worker gets: no cached markers
        state = dict(self.__dict__)
        state["_markers"] = {}
        return state

    def lock(self):
        """The local lock of decaf.features.output_lock; an object store has none (docs/scale.md)."""
        from .features import output_lock
        return output_lock(self.url) if is_local(self.url) else contextlib.nullcontext()

    def prepare(self, fingerprint, items, root, info, shard_size, shapes):
        """Resume this run's store, or lay out a new one (replacing another run's)."""
        self.fingerprint, self.shard_size, self.images = fingerprint, shard_size, len(items)
        self.shapes = {b: tuple(s) for b, s in shapes.items()}
        meta = read_meta(self.url)
        if meta is not None and meta.get("fingerprint") == fingerprint:
            self._markers = _read_markers(self.url, fingerprint)
            return
        group = _open(self.url, "w")
        features = group.require_group("features")
        for name in self.blobs:
            shape = self.shapes[name]
            features.create_array(name, shape=(len(items),) + shape, chunks=(shard_size,) + shape,
                                  dtype="float32", fill_value=0.0)
        paths = group.require_group("items")
        _string_array(paths, "path", [it.relpath for it in items])
        _string_array(paths, "label", [it.label for it in items])
        group.attrs[KEY] = {"format": FORMAT, "fingerprint": fingerprint, "images": len(items),
                            "shard_size": shard_size, "blobs": self.blobs,
                            "shapes": {b: list(s) for b, s in self.shapes.items()}, "root": os.fspath(root),
                            "info": info, "complete": False}
        self._markers = {}

    def done(self, k):
        return k in self._markers

    def errors(self, k):
        return [(int(pos), str(message)) for pos, message in self._markers[k]["errors"]]

    def write(self, k, arrays, good, errors):
        """Shard k's rows of every blob (zeros for its skipped images), then its commit ``done/shard-K.json``."""
        offset = k * self.shard_size
        n = min(self.shard_size, self.images - offset)
        group = _open(self.url, "r+")
        found = dict(group.attrs).get(KEY, {}).get("fingerprint")
        if found != self.fingerprint:
            from .features import ShardError
            raise ShardError(f"{self.url} now belongs to another run (fingerprint {str(found)[:12]}...); "
                             f"shard {k} of run {self.fingerprint[:12]}... not written")
        for name in self.blobs:
            rows = np.zeros((n,) + self.shapes[name], np.float32)
            if arrays[name] is not None:
                rows[np.asarray(good, dtype=np.int64)] = arrays[name]
            group[f"features/{name}"][offset:offset + n] = rows
        marker = {"shard": k, "fingerprint": self.fingerprint, "images": n,
                  "errors": [[int(pos) + offset, str(message)] for pos, message in errors]}
        _put(self.url, _marker_key(k), json.dumps(marker).encode())
        self._markers[k] = marker

    def finish(self, items, root, info, n_shards):
        """Check every shard is committed, write ``index`` and ``skipped``, mark the store complete."""
        markers = _read_markers(self.url, self.fingerprint)
        missing = [k for k in range(n_shards) if k not in markers]
        if missing:
            from .features import ShardError
            raise ShardError(f"{self.url}: {len(missing)} shards not committed, e.g. shard {missing[0]} "
                             "(do the workers write to the same store as the client?)")
        errors = sorted((int(p), m) for k in range(n_shards) for p, m in markers[k]["errors"])
        bad = np.asarray([p for p, _ in errors], dtype=np.int64)
        good = np.setdiff1d(np.arange(len(items), dtype=np.int64), bad)
        group = _open(self.url, "r+")
        group.create_array("index", shape=good.shape, dtype="int64",
                           chunks=(max(1, min(len(good), 1 << 20)),), overwrite=True)
        if len(good):
            group["index"][:] = good
        skipped = group.require_group("skipped")
        skipped.create_array("index", shape=bad.shape, dtype="int64", chunks=(max(1, len(bad)),), overwrite=True)
        if len(bad):
            skipped["index"][:] = bad
        _string_array(skipped, "error", [m for _, m in errors])
        meta = dict(group.attrs[KEY])
        meta["complete"] = True
        group.attrs[KEY] = meta
        return open_store(self.url)


def _complete_group(url):
    meta = read_meta(url)
    if meta is None:
        raise FileNotFoundError(f"{url}: no such feature store")
    if not meta.get("complete"):
        raise ValueError(f"{url} is not complete (an interrupted run): run the same 'decaf extract' again "
                         "to finish it")
    return _open(url, "r"), meta


def _as_str(array):
    return _strings([str(v) for v in array[:]]) if array.shape[0] else _strings([])


def _metadata(group, meta, index):
    bad = np.asarray(group["skipped/index"][:], dtype=np.int64)
    paths = _as_str(group["items/path"])
    labels = _as_str(group["items/label"])
    return {"paths": _strings(paths[index].tolist()), "labels": _strings(labels[index].tolist()),
            "skipped": _strings(paths[bad].tolist()),
            "skipped_errors": _as_str(group["skipped/error"]), "root": meta["root"], "info": meta["info"]}


def _shard_rows(index, images, shard_size):
    """For each shard: (its first row in the set, its readable images' positions within the shard)."""
    bounds = np.searchsorted(index, np.arange(0, images + shard_size, shard_size))
    return [(int(a), index[a:b] - k * shard_size) for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def open_store(out):
    """The store as ``load_features`` gives an ``.npz``, its feature arrays lazy Dask arrays of the
    readable images' rows, one Dask chunk per shard (a shard with none left out)."""
    import dask.array as da

    url = store_url(out)
    group, meta = _complete_group(url)
    index = np.asarray(group["index"][:], dtype=np.int64)
    shards, size = _shard_rows(index, meta["images"], meta["shard_size"]), meta["shard_size"]
    result = {}
    for name in meta["blobs"]:
        whole = da.from_zarr(group[f"features/{name}"])
        pieces = []
        for k, (_, rows) in enumerate(shards):
            piece = whole[k * size:(k + 1) * size]
            if len(rows):
                pieces.append(piece if len(rows) == piece.shape[0] else piece[rows])
        result[name] = da.concatenate(pieces) if pieces else whole[:0]
    result.update(_metadata(group, meta, index))
    return result


def load_store(out):
    """The store read into memory: the dict ``load_features`` returns for an ``.npz``."""
    url = store_url(out)
    group, meta = _complete_group(url)
    index = np.asarray(group["index"][:], dtype=np.int64)
    result = {name: np.asarray(group[f"features/{name}"][:])[index] for name in meta["blobs"]}
    result.update(_metadata(group, meta, index))
    return result


class StoreShards:
    """One feature array of a complete store, shard by shard: ``shard(k)`` -> (first row in the set, X)."""

    def __init__(self, out, blob):
        url = store_url(out)
        group, meta = _complete_group(url)
        if blob not in meta["blobs"]:
            raise KeyError(f"{url} has no feature array {blob!r} (it has {meta['blobs']})")
        index = np.asarray(group["index"][:], dtype=np.int64)
        self.array, self.size = group[f"features/{blob}"], meta["shard_size"]
        self.rows = _shard_rows(index, meta["images"], self.size)
        self.n_shards = len(self.rows)

    def shard(self, k):
        first, rows = self.rows[k]
        X = np.asarray(self.array[k * self.size:(k + 1) * self.size])[rows]
        return first, X.reshape(len(X), int(np.prod(X.shape[1:])))


def iter_chunks(out, blob):
    """(X, labels) for each shard's readable images, in order: the whole set, one shard in memory at a time."""
    reader = StoreShards(out, blob)
    labels = _as_str(_open(store_url(out), "r")["items/label"])
    index = np.asarray(_open(store_url(out), "r")["index"][:], dtype=np.int64)
    labels = labels[index]
    for k in range(reader.n_shards):
        first, X = reader.shard(k)
        if len(X):
            yield X, labels[first:first + len(X)]


def export_npy(out, blob, path):
    """Write one feature array of a complete store to ``path`` as an ``.npy`` file, shard by shard (one
    shard in memory), and return it opened as a read-only NumPy memmap: the store's chunks are compressed,
    so a memmap needs this one copy."""
    reader = StoreShards(out, blob)
    meta = read_meta(store_url(out))
    rows = sum(len(r) for _, r in reader.rows)
    width = int(np.prod(meta["shapes"][blob]))
    fd, temp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".npy.tmp")
    os.close(fd)
    try:
        target = np.lib.format.open_memmap(temp, mode="w+", dtype=np.float32, shape=(rows, width))
        for k in range(reader.n_shards):
            first, X = reader.shard(k)
            target[first:first + len(X)] = X
        target.flush()
        del target
        from .io.blobfile import _current_umask
        os.chmod(temp, 0o666 & ~_current_umask())       # mkstemp's 0600 would outlive the rename
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return np.load(path, mmap_mode="r")


def save_store(out, feats, shard_size=256):
    """Write ``feats`` (what ``load_features`` returns: blob arrays, paths, labels, skipped, ...) as a
    complete store: an ``.npz`` converted, or features made elsewhere. Returns ``open_store(out)``."""
    import hashlib

    from .features import RESERVED_KEYS, Item
    blobs = [k for k in feats if k not in RESERVED_KEYS]
    paths = [str(p) for p in feats["paths"]]
    labels = [str(v) for v in feats.get("labels", [""] * len(paths))]
    skipped = [str(p) for p in feats.get("skipped", [])]
    errors = [str(m) for m in feats.get("skipped_errors", [""] * len(skipped))]
    items = [Item(p, p, label) for p, label in zip(paths, labels)] + [Item(p, p, "") for p in skipped]
    n_good = len(paths)
    shapes = {b: tuple(np.asarray(feats[b]).shape[1:]) for b in blobs}
    digest = hashlib.sha256()
    for name in blobs:
        digest.update(name.encode() + np.ascontiguousarray(feats[name], np.float32).tobytes())
    digest.update("\0".join(paths + labels + skipped).encode())
    sink = ZarrShards(out, blobs)
    info = feats.get("info") or {}
    with sink.lock():
        sink.prepare("saved-" + digest.hexdigest(), items, feats.get("root", ""), info, shard_size, shapes)
        for k, start in enumerate(range(0, len(items), shard_size)):
            stop = min(start + shard_size, len(items))
            good = np.arange(start, min(stop, n_good)) - start
            arrays = {b: np.asarray(feats[b][start:min(stop, n_good)], np.float32) for b in blobs}
            bad = [(i - start, errors[i - n_good]) for i in range(max(start, n_good), stop)]
            sink.write(k, arrays, good, bad)
        return sink.finish(items, feats.get("root", ""), info, -(-len(items) // shard_size))
