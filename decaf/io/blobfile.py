"""decaf's single-file format: named arrays plus string metadata, in the safetensors layout.

A ``.decaf`` file is byte for byte a safetensors file, so other tools can open it::

    offset 0       N: the header length, an unsigned 64-bit little-endian integer
    offset 8       N bytes of UTF-8 JSON (the header), padded with spaces so that
                   the data buffer starts on a 64-byte boundary
    offset 8 + N   the data buffer: every array's raw bytes, little-endian, C order

The header is one JSON object::

    {"__metadata__": {"decaf.format_version": "1", ...},          # str -> str
     "conv1.weight": {"dtype": "F32", "shape": [96, 3, 11, 11],
                      "data_offsets": [begin, end]}, ...}

``data_offsets`` count bytes from the start of the data buffer.  The arrays tile
the buffer exactly: sorted by ``begin``, each starts where the previous one ends,
the first at 0 and the last ends at the end of the file.  The writer lays out the
buffer by decreasing item size, so every array is aligned to its own item size
(the buffer itself is 64-byte aligned); the header keeps the caller's order.

Reading memory-maps the file, so it costs O(header) however big the weights are;
the arrays are read-only views into the map.  The reader checks every field
before returning and raises :class:`DecafFormatError` naming the file and the
problem.  Nothing in here knows about nets: ``decaf.save``/``decaf.load`` put the
net spec and friends into the metadata.
"""

import fcntl
import json
import math
import mmap as _mmap
import os
import re
import struct
import tempfile
import time

import numpy as np

from .errors import DecafFormatError

__all__ = ["write_blobfile", "read_blobfile", "DTYPES", "MAX_HEADER_BYTES", "ALIGNMENT"]

# safetensors dtype code -> little-endian NumPy dtype.
DTYPES = {
    "BOOL": np.dtype("?"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}
# (kind, itemsize) -> code: matches a dtype whatever its byte order.
_CODE_OF = {(dt.kind, dt.itemsize): code for code, dt in DTYPES.items()}
# Read-only extra: bfloat16 (common in safetensors files from elsewhere) has no
# NumPy dtype, so it is widened to a float32 copy instead of being mapped.
_BF16 = "BF16"

ALIGNMENT = 64
# safetensors refuses headers above 100 MB; a bigger length field is a corrupt file.
MAX_HEADER_BYTES = 100 * 1024 * 1024
_MAX_NDIM = 32
_ENTRY_KEYS = ("dtype", "shape", "data_offsets")
_METADATA_KEY = "__metadata__"


# ----------------------------------------------------------------------------------------
# writing


def write_blobfile(path, arrays, metadata=None):
    """Write ``arrays`` (name -> array) and ``metadata`` (str -> str) to ``path`` atomically.

    The file is written to a temporary file in the same directory, flushed and
    fsynced, then renamed over ``path``: a reader sees the old file or the new
    one, never half of one, and a failure leaves an existing file untouched.

    Raises TypeError for a non-str name, metadata key or value, or an array
    whose dtype the format cannot hold (supported: bool, int8-64, uint8-64,
    float16/32/64), and ValueError for an empty name or the reserved name
    ``"__metadata__"``.
    """
    name = os.fspath(path)
    metadata = {} if metadata is None else metadata
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"{name}: metadata must map str to str, but {key!r} -> {type(value).__name__} "
                f"{_short_repr(value)} (encode it, e.g. with json.dumps)"
            )

    entries = []  # (array name, code, little-endian contiguous array)
    for array_name, value in arrays.items():
        if not isinstance(array_name, str):
            raise TypeError(f"{name}: array names must be str, got {array_name!r}")
        if array_name == "" or array_name == _METADATA_KEY:
            raise ValueError(f"{name}: {array_name!r} cannot be used as an array name")
        array = np.asarray(value)
        code = _code_for(array.dtype)
        if code is None:
            raise TypeError(
                f"{name}: array {array_name!r} has dtype {array.dtype}, which a blob file cannot "
                f"hold (supported: {', '.join(str(dt) for dt in DTYPES.values())})"
            )
        entries.append((array_name, code, np.ascontiguousarray(array, dtype=DTYPES[code]), array.shape))

    # Largest items first: then every array begins at a multiple of its item size.
    layout = sorted(entries, key=lambda entry: -entry[2].dtype.itemsize)
    offsets = {}
    position = 0
    for array_name, _, array, _ in layout:
        offsets[array_name] = (position, position + array.nbytes)
        position += array.nbytes

    header = {_METADATA_KEY: dict(metadata)}
    for array_name, code, _, shape in entries:
        header[array_name] = {
            "dtype": code,
            "shape": [int(n) for n in shape],
            "data_offsets": list(offsets[array_name]),
        }
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-(8 + len(header_bytes)) % ALIGNMENT)

    def write(stream):
        stream.write(struct.pack("<Q", len(header_bytes)))
        stream.write(header_bytes)
        for _, _, array, _ in layout:
            if array.size:
                stream.write(array.reshape(-1).view(np.uint8))

    _write_atomically(name, write)


def _code_for(dtype):
    if dtype.fields is not None or dtype.subdtype is not None:
        return None
    return _CODE_OF.get((dtype.kind, dtype.itemsize))


# A temporary file untouched for this long, and not locked by its writer, is a killed write's.
STALE_TEMP_SECONDS = 60


def _write_atomically(name, write):
    directory = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(directory):      # else mkstemp's error would name the temporary file
        raise FileNotFoundError(f"{name}: the folder {directory} does not exist")
    try:
        mode = os.stat(name).st_mode & 0o7777   # an existing file keeps its mode
    except FileNotFoundError:
        mode = 0o666 & ~_current_umask()        # a new one gets what the umask allows
    _remove_stale_temps(directory, os.path.basename(name))
    fd, temp_name = tempfile.mkstemp(
        prefix="." + os.path.basename(name) + ".", suffix=".tmp", dir=directory
    )
    try:
        # Held until the rename: the next writer's cleanup sees a live write and leaves it.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with os.fdopen(fd, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, name)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _remove_stale_temps(directory, base):
    """Delete ``.BASE.XXXXXXXX.tmp`` files that a killed write of BASE left behind (SIGKILL, power
    loss: no ``except`` ran). A writer holds an flock on its temporary file until the rename, so a
    file nobody holds and nobody has written to for STALE_TEMP_SECONDS belongs to no live writer."""
    pattern = re.compile(r"\." + re.escape(base) + r"\.[A-Za-z0-9_]{8}\.tmp")
    try:
        names = [n for n in os.listdir(directory) if pattern.fullmatch(n)]
    except OSError:
        return
    now = time.time()
    for temp in names:
        path = os.path.join(directory, temp)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if now - os.fstat(fd).st_mtime < STALE_TEMP_SECONDS:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # raises if a writer still holds it
            os.unlink(path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _current_umask():
    # os.umask can only be read by setting it, which races with other threads;
    # Linux shows it in /proc.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    # Makes the rename itself durable; not possible on every platform.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------
# reading


def read_blobfile(path, mmap=True):
    """Read a blob file; return ``(arrays, metadata)``.

    ``arrays`` maps each name (in header order) to a read-only array; with
    ``mmap=True`` (the default) they are views into a read-only memory map of
    the file, so loading costs O(header) and pages are read on first touch.
    With ``mmap=False`` the data is read into memory (still read-only arrays).
    BF16 arrays come back as float32 copies.  ``metadata`` is the str -> str dict
    stored under ``__metadata__`` (empty if absent).

    A missing file raises FileNotFoundError; anything wrong with the contents
    raises DecafFormatError saying what is wrong.
    """
    name = os.fspath(path)
    with open(name, "rb") as stream:
        file_size = os.fstat(stream.fileno()).st_size
        if file_size < 8:
            raise _error(
                name,
                f"file is only {file_size} bytes; a blob file starts with an 8-byte header length",
            )
        (header_size,) = struct.unpack("<Q", stream.read(8))
        if header_size > MAX_HEADER_BYTES:
            raise _error(
                name,
                f"header length field says {header_size} bytes, more than the "
                f"{MAX_HEADER_BYTES}-byte limit: not a blob file, or a corrupt one",
            )
        if header_size > file_size - 8:
            raise _error(
                name,
                f"header says {header_size} bytes of JSON but the file has only "
                f"{file_size - 8} bytes after the length field (truncated?)",
            )
        header = _parse_header(name, stream.read(header_size))
        data_start = 8 + header_size
        data_size = file_size - data_start
        tensors, metadata = _check_header(name, header, data_size)

        if data_size == 0:
            buffer, base = b"", 0
        elif mmap:
            buffer, base = _mmap.mmap(stream.fileno(), 0, access=_mmap.ACCESS_READ), data_start
            if len(buffer) != file_size:
                raise _error(name, "file changed size while it was being opened")
        else:
            stream.seek(data_start)
            buffer, base = stream.read(data_size), 0
            if len(buffer) != data_size:
                raise _error(name, "file changed size while it was being read")

    arrays = {}
    for tensor_name, (code, shape, begin, end) in tensors.items():
        arrays[tensor_name] = _make_array(name, tensor_name, buffer, base, code, shape, begin, end)
    return arrays, metadata


def _make_array(name, tensor_name, buffer, base, code, shape, begin, end):
    dtype = np.dtype("<u2") if code == _BF16 else DTYPES[code]
    try:
        if end == begin:
            array = np.empty(shape, dtype)
        else:
            count = (end - begin) // dtype.itemsize
            array = np.frombuffer(buffer, dtype, count=count, offset=base + begin).reshape(shape)
        if code == _BF16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:
        raise _error(name, f"tensor {tensor_name!r}: cannot build an array of shape {shape}: {exc}")
    array.flags.writeable = False
    return array


def _parse_header(name, raw):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(name, f"header is not valid UTF-8 (byte {exc.start} of the header): corrupt file")
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise _error(name, f"header is not valid JSON ({exc.msg} at character {exc.pos}): corrupt file")
    except (ValueError, RecursionError) as exc:
        raise _error(name, f"header is not valid JSON ({exc}): corrupt file")
    if not isinstance(header, dict):
        raise _error(name, f"header must be a JSON object, but it is a {_json_type(header)}")
    return header


def _no_duplicates(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constants(constant):
    raise ValueError(f"{constant} is not allowed")


def _check_header(name, header, data_size):
    """Validate the parsed header; return ({name: (code, shape, begin, end)}, metadata)."""
    metadata = header.get(_METADATA_KEY, {})
    if not isinstance(metadata, dict):
        raise _error(name, f"__metadata__ must be an object, but it is a {_json_type(metadata)}")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise _error(
                name,
                f"__metadata__[{key!r}] must be a string, but it is a {_json_type(value)}",
            )

    tensors = {}
    for tensor_name, info in header.items():
        if tensor_name == _METADATA_KEY:
            continue
        where = f"tensor {tensor_name!r}"
        if tensor_name == "":
            raise _error(name, "a tensor has an empty name")
        if not isinstance(info, dict):
            raise _error(
                name,
                f"{where}: expected an object with dtype, shape and data_offsets, "
                f"got a {_json_type(info)}",
            )
        missing = [key for key in _ENTRY_KEYS if key not in info]
        if missing:
            raise _error(name, f"{where}: missing {', '.join(missing)}")
        unknown = sorted(key for key in info if key not in _ENTRY_KEYS)
        if unknown:
            raise _error(name, f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")

        code = info["dtype"]
        if not isinstance(code, str) or (code not in DTYPES and code != _BF16):
            raise _error(
                name,
                f"{where}: unknown or unsupported dtype {_short_repr(code)} "
                f"(supported: {', '.join(DTYPES)}, {_BF16})",
            )
        itemsize = 2 if code == _BF16 else DTYPES[code].itemsize

        shape = info["shape"]
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_NDIM
            or not all(_is_int(n) and 0 <= n < 2**63 for n in shape)
        ):
            raise _error(
                name,
                f"{where}: shape must be a list of at most {_MAX_NDIM} non-negative integers, "
                f"got {_short_repr(shape)}",
            )

        offsets = info["data_offsets"]
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(n) and n >= 0 for n in offsets)
        ):
            raise _error(
                name,
                f"{where}: data_offsets must be a list of two non-negative integers "
                f"[begin, end], got {_short_repr(offsets)}",
            )
        begin, end = offsets
        if begin > end:
            raise _error(name, f"{where}: data_offsets [{begin}, {end}] end before they begin")
        if end > data_size:
            raise _error(
                name,
                f"{where}: data_offsets [{begin}, {end}] run past the end of the data buffer, "
                f"which has only {data_size} bytes (truncated file?)",
            )
        needed = itemsize * math.prod(shape)
        if end - begin != needed:
            raise _error(
                name,
                f"{where}: dtype {code} and shape {shape} need {needed} bytes, "
                f"but data_offsets [{begin}, {end}] span {end - begin}",
            )
        tensors[tensor_name] = (code, tuple(shape), begin, end)

    # The arrays must tile the buffer: no overlap, no gap, nothing left over.
    expected, previous = 0, None
    for tensor_name, (_, _, begin, end) in sorted(tensors.items(), key=lambda item: item[1][2:]):
        if begin < expected:
            raise _error(
                name,
                f"tensor {tensor_name!r} (bytes {begin}..{end}) overlaps tensor {previous!r} "
                f"(which ends at byte {expected})",
            )
        if begin > expected:
            raise _error(
                name,
                f"bytes {expected}..{begin} of the data buffer belong to no tensor "
                f"(gap before tensor {tensor_name!r})",
            )
        expected, previous = end, tensor_name
    if expected != data_size:
        raise _error(
            name,
            f"the data buffer has {data_size} bytes but the tensors cover only {expected} "
            f"(trailing bytes, or a header that lost entries)",
        )
    return tensors, dict(metadata)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value):
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _short_repr(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error(name, message):
    return DecafFormatError(f"{name}: {message}")
