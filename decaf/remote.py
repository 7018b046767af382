"""Images from fsspec URLs (``s3://``, ``gs://``, ``http(s)://``, ``memory://`` ...) for ``decaf.features``.

    collect_images(["s3://bucket/train/"])          # every image below it; label = first folder
    collect_images(["gs://bucket/lists/train.txt"])  # a list file; relative entries are relative to it

A URL source is listed through fsspec like a local one (``decaf.features.collect_images``: sorted,
hidden entries left out, images by extension). An item's source stays the URL string, so a shard of
items can be sent to Dask workers; ``open_source`` turns it into a file object that fetches the
bytes when the decoder first reads it, so a missing or unreadable object is one skipped image with
its reason, like a broken local file. ``file://`` URLs are plain local paths.
"""
import io
import os
import posixpath


def is_url(source):
    return isinstance(source, str) and "://" in source


def local_path(source):
    """``file:///a/b`` -> ``/a/b``; anything else unchanged."""
    if isinstance(source, str) and source.startswith("file://"):
        return source[len("file://"):]
    return source


class RemoteImage:
    """A URL read through fsspec on first use; str() is the URL (error messages name it)."""

    def __init__(self, url):
        self.url, self._buffer = url, None

    def __str__(self):
        return self.url

    __repr__ = __str__

    def __getattr__(self, name):          # read, seek, tell... of the fetched bytes
        if name.startswith("__") or name in ("url", "_buffer"):
            raise AttributeError(name)
        if self._buffer is None:
            import fsspec
            with fsspec.open(self.url, "rb") as f:
                self._buffer = io.BytesIO(f.read())
        return getattr(self._buffer, name)


def open_source(source):
    """What the decoder gets for an item's source: a RemoteImage for a URL, else the source itself."""
    return RemoteImage(source) if is_url(source) else source


# URL -> "size:version" from the last listing (the job fingerprint's stand-in for a file's size and mtime)
_STAMPS = {}


def _stamp(info):
    version = next((str(info[k]) for k in ("mtime", "LastModified", "last_modified", "updated", "ETag", "etag",
                                             "created") if info.get(k) is not None), "")
    return f"{info.get('size', '')}:{version}"


def stamp(url):
    """The size and version of an image URL as seen when its folder was listed ("-" if it was not)."""
    return _STAMPS.get(url, "-")


def _is_image_name(name):
    from .features import IMAGE_EXTENSIONS
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def collect_images(sources):
    """URL sources (one protocol) -> (items, root URL), as ``decaf.features.collect_images`` for paths."""
    import fsspec

    from .features import LIST_EXTENSIONS, Item, first_of_each_path, parse_list_lines
    if not all(is_url(s) for s in sources):
        raise ValueError(f"give either URLs or local paths as sources, not both: {list(map(str, sources))}")
    fs, _ = fsspec.core.url_to_fs(sources[0])
    found, roots = [], []            # (path in fs, label)
    for source in sources:
        source_fs, path = fsspec.core.url_to_fs(source)
        if type(source_fs) is not type(fs):
            raise ValueError(f"all URL sources must use one protocol: {sources[0]} and {source}")
        path = path.rstrip("/")
        if fs.isdir(path):
            listing = fs.find(path, detail=True)
            for name, info in listing.items():
                _STAMPS[fs.unstrip_protocol(name)] = _stamp(info)
            for name in sorted(listing):
                rel = posixpath.relpath(name, path)
                parts = rel.split("/")
                if any(part.startswith(".") for part in parts) or not _is_image_name(parts[-1]):
                    continue
                found.append((name, parts[0] if len(parts) > 1 else ""))
            roots.append(path)
        elif os.path.splitext(path)[1].lower() in LIST_EXTENSIONS:
            if not fs.isfile(path):
                raise FileNotFoundError(f"{source}: no such list file")
            with fs.open(path, "rt", encoding="utf-8") as f:
                lines = list(f)
            base = posixpath.dirname(path)
            for image, label in parse_list_lines(lines):
                if is_url(image):
                    found.append((fsspec.core.url_to_fs(image)[1], label))
                else:
                    found.append((posixpath.normpath(posixpath.join(base, image)), label))
        elif fs.exists(path) or _is_image_name(path):
            found.append((path, ""))     # a missing image is skipped and listed, like a broken one
        else:
            raise FileNotFoundError(f"{source}: no such file or directory")
    unique = first_of_each_path(found)
    dirs = [posixpath.dirname(p) for p, _ in unique] + roots
    root = posixpath.commonpath(dirs) if dirs else ""
    items = [Item(fs.unstrip_protocol(p), posixpath.relpath(p, root) if root else p, label) for p, label in unique]
    return items, fs.unstrip_protocol(root) if root else ""
