"""Read PyTorch checkpoints (``.pt``/``.pth``) into NumPy arrays without importing torch.

Both formats ``torch.save`` has written are supported:

* the zip format (torch >= 1.6): ``<dir>/data.pkl`` holds the object pickle, each
  storage is a raw file ``<dir>/data/<key>``, and an optional ``<dir>/byteorder``
  says ``little`` or ``big``;
* the legacy format (``_use_new_zipfile_serialization=False``, and every file from
  before 1.6): five pickles back to back -- magic number, protocol version (1001),
  sys_info, the object, the list of storage keys -- then, for each key in that
  list, an int64 element count and the storage's raw bytes.

In both, a tensor is pickled as a call ``torch._utils._rebuild_tensor_v2(storage,
offset, size, stride, requires_grad, hooks[, metadata])`` whose storage is a
*persistent id* ``('storage', torch.FloatStorage, key, location, numel[, view])``.

Safety: pickles are never loaded with the normal machinery.  A restricted
unpickler resolves only the globals needed to rebuild tensors -- the rebuild
functions (replaced by small functions of our own), the ``torch.*Storage`` type
names, a few ``torch`` dtypes and ``collections.OrderedDict`` -- and refuses every
other global by name, so a checkpoint cannot run code.  The objects those names
resolve to are made afresh for every file (``_allowed_globals``) and refuse the
pickle's BUILD opcode, so one checkpoint cannot change how a later one is read.
Before each pickle is unpickled, a pass over its opcodes (pickletools, nothing
executed) refuses memo indices that would make the C unpickler allocate gigabytes
and counts the opcodes.  Every file gets a budget (decaf/io/limits.py) of bytes it
may make us allocate (storages inflated, arrays copied out, tensor names) and of
work (dict entries built, nodes walked, in proportion to its opcodes): a small
file cannot cost gigabytes or minutes.  Every problem with the file (bad magic,
truncation, wrong sizes, a refused global, a spent budget, or any exception from
the pickle, zip or NumPy machinery) is raised as :class:`DecafFormatError`.

What comes back: the unpickled object is walked and every tensor in it becomes a
C-contiguous NumPy copy, named by its path with dots -- a plain state dict
``{"conv.weight": t}`` gives ``"conv.weight"``, ``{"state_dict": {"fc.bias": t}}``
gives ``"state_dict.fc.bias"``, list and tuple items are named by index, a bare
tensor is named ``""``.  Non-tensor values (epoch counters, strings, None, ...)
are skipped.  One tensor pickled under two names (tied weights) gives the same
array under both.  bfloat16 tensors become float32.
"""

import collections
import math
import mmap
import os
import pickle
import pickletools
import struct
import warnings
import zipfile

import numpy as np

from . import limits
from .errors import DecafFormatError

__all__ = ["read_torch_checkpoint", "ALLOWED_GLOBALS"]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# A view whose strides repeat elements (e.g. an expanded tensor) is copied out in
# full; refuse copies that would be both larger than the storage and this big.
_MAX_EXPANDED_BYTES = 1 << 30
_MAX_DEPTH = 100
_MAX_NODES = 2_000_000


class _Malformed(Exception):
    """Raised inside the parser; read_torch_checkpoint adds the file name."""


# ----------------------------------------------------------------------------------------
# what the pickle may refer to


class _ElementType:
    """Stands in for a torch storage class or dtype: the NumPy dtype of its elements."""

    __slots__ = ("torch_name", "dtype", "bfloat16")

    def __init__(self, torch_name, dtype, bfloat16=False):
        self.torch_name = torch_name
        self.dtype = np.dtype(dtype)  # little-endian; the raw dtype for bfloat16
        self.bfloat16 = bfloat16

    def __setstate__(self, state):
        raise _Malformed(f"the pickle tries to modify {self.torch_name}")

    def __repr__(self):
        return self.torch_name


_ELEMENT_TYPES = [
    # (storage class name, dtype name, numpy dtype)
    ("FloatStorage", "float32", "<f4"),
    ("DoubleStorage", "float64", "<f8"),
    ("HalfStorage", "float16", "<f2"),
    ("BFloat16Storage", "bfloat16", "<u2"),
    ("LongStorage", "int64", "<i8"),
    ("IntStorage", "int32", "<i4"),
    ("ShortStorage", "int16", "<i2"),
    ("CharStorage", "int8", "i1"),
    ("ByteStorage", "uint8", "u1"),
    ("BoolStorage", "bool", "?"),
    ("ComplexFloatStorage", "complex64", "<c8"),
    ("ComplexDoubleStorage", "complex128", "<c16"),
]
_STORAGE_TYPES = {
    storage: _ElementType("torch." + storage, dt, bfloat16=(name == "bfloat16"))
    for storage, name, dt in _ELEMENT_TYPES
}
# UntypedStorage holds bytes; torch pairs it with an explicit dtype (_rebuild_tensor_v3).
_STORAGE_TYPES["UntypedStorage"] = _ElementType("torch.UntypedStorage", "u1")
_TORCH_DTYPES = {
    name: _ElementType("torch." + name, dt, bfloat16=(name == "bfloat16"))
    for _, name, dt in _ELEMENT_TYPES
}
_TORCH_DTYPES.update(
    {name: _ElementType("torch." + name, dt) for name, dt in
     [("uint16", "<u2"), ("uint32", "<u4"), ("uint64", "<u8")]}
)


class _StorageRef:
    """A storage named by a persistent id; its bytes arrive later (legacy) or on demand (zip)."""

    __slots__ = ("key", "element_type", "numel", "root", "offset", "data", "byteorder")

    def __init__(self, key, element_type, numel, root=None, offset=0):
        self.key = key
        self.element_type = element_type
        self.numel = numel
        self.root = root  # for legacy storage views: the storage this one is a slice of
        self.offset = offset  # in elements of root
        self.data = None  # bytes-like, filled in once read
        self.byteorder = "<"

    def __setstate__(self, state):
        raise _Malformed(f"the pickle tries to modify storage {self.key!r}")


class _TensorRef:
    """A tensor waiting for its storage's bytes: rebuilt by ``_materialize``."""

    __slots__ = ("storage", "offset", "size", "stride", "dtype", "metadata", "array")

    def __init__(self, storage, offset, size, stride, dtype=None, metadata=None):
        if not isinstance(storage, _StorageRef):
            raise _Malformed(f"a tensor is rebuilt from {type(storage).__name__}, not a storage")
        if not _is_int(offset) or offset < 0:
            raise _Malformed(f"tensor storage offset must be a non-negative int, got {offset!r}")
        # (the dimension count first: one memoised million-item tuple must not be walked per tensor)
        if isinstance(size, tuple) and len(size) > 32:
            raise _Malformed(f"tensor has {len(size)} dimensions")
        if not isinstance(size, tuple) or not all(_is_int(n) and n >= 0 for n in size):
            raise _Malformed(f"tensor size must be a tuple of non-negative ints, got {_short_repr(size)}")
        if (
            not isinstance(stride, tuple)
            or len(stride) != len(size)
            or not all(_is_int(n) and n >= 0 for n in stride)
        ):
            raise _Malformed(
                f"tensor stride must be a tuple of {len(size)} non-negative ints, got {_short_repr(stride)}"
            )
        if dtype is not None and not isinstance(dtype, _ElementType):
            raise _Malformed(f"tensor dtype must be a torch dtype, got {dtype!r}")
        if metadata is not None and not isinstance(metadata, dict):
            raise _Malformed(f"tensor metadata must be a dict, got {type(metadata).__name__}")
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride
        self.dtype = dtype or storage.element_type
        self.metadata = metadata or {}
        self.array = None

    def __setstate__(self, state):
        raise _Malformed("the pickle tries to modify a tensor")


def _check_hooks(requires_grad, backward_hooks):
    if not isinstance(requires_grad, bool):
        raise _Malformed(f"requires_grad must be a bool, got {requires_grad!r}")
    if not isinstance(backward_hooks, dict) or backward_hooks:
        raise _Malformed("tensor carries backward hooks; only an empty OrderedDict is allowed")


# Our own stand-ins for torch's rebuild functions: same signatures, no torch.
def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       metadata=None):
    _check_hooks(requires_grad, backward_hooks)
    return _TensorRef(storage, storage_offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    _check_hooks(requires_grad, backward_hooks)
    return _TensorRef(storage, storage_offset, size, stride, dtype=dtype, metadata=metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    _check_hooks(requires_grad, backward_hooks)
    if not isinstance(data, _TensorRef):
        raise _Malformed(f"a Parameter wraps {type(data).__name__}, not a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    # state holds Python attributes set on the Parameter; they are not weights.
    return _rebuild_parameter(data, requires_grad, backward_hooks)


_REBUILD_FUNCTIONS = {
    "_rebuild_tensor": _rebuild_tensor,
    "_rebuild_tensor_v2": _rebuild_tensor_v2,
    "_rebuild_tensor_v3": _rebuild_tensor_v3,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter_with_state,
}


class _Rebuild:
    """What a pickle gets for ``torch._utils._rebuild_*``: calls our function, cannot be changed.

    A plain function would do, but a pickle's BUILD opcode can set a function's
    attributes (``__defaults__``...) and so change every later call; this object has
    no attributes to set and refuses BUILD, and a new one is made for every file.
    """

    __slots__ = ("_name", "_function", "_budget")

    def __init__(self, name, function, budget):
        self._name, self._function, self._budget = name, function, budget

    def __call__(self, *args):
        self._budget.spend_work(1 + sum(len(a) for a in args if isinstance(a, tuple)),
                                f"calling {self._name}")
        return self._function(*args)

    def __setstate__(self, *state):
        raise _Malformed(f"the pickle tries to modify torch._utils.{self._name}")

    def __repr__(self):
        return f"torch._utils.{self._name}"


def _ordered_dict_type(budget):
    """A fresh ``collections.OrderedDict`` subclass for one file: counts the entries it is
    built with, and takes BUILD state (torch pickles a state dict's ``_metadata`` that way)
    without keeping it; BUILD on the class itself is refused."""

    class OrderedDict(collections.OrderedDict):
        __slots__ = ()

        def __init__(self, *args, **kwargs):
            items = args[0] if args else ()
            if len(args) > 1 or kwargs or not isinstance(items, (list, tuple, dict)):
                raise _Malformed("OrderedDict is called with something other than a list of pairs")
            budget.spend_work(1 + len(items), "building a dict")
            super().__init__(items)

        def __setstate__(*args):
            if len(args) != 2 or not isinstance(args[0], collections.OrderedDict):
                raise _Malformed("the pickle tries to modify collections.OrderedDict")
            state = args[1]
            budget.spend_work(1 + (len(state) if hasattr(state, "__len__") else 0), "setting dict state")

    return OrderedDict


def _allowed_globals(budget):
    """{(module, name): object} for one file: everything a tensor-only pickle may name, new."""
    found = {("collections", "OrderedDict"): _ordered_dict_type(budget)}
    for name, function in _REBUILD_FUNCTIONS.items():
        found[("torch._utils", name)] = _Rebuild(name, function, budget)
    # Storage types and dtypes are shared: immutable (slots, BUILD refused by __setstate__).
    found.update({("torch", name): t for name, t in _STORAGE_TYPES.items()})
    found[("torch.storage", "UntypedStorage")] = _STORAGE_TYPES["UntypedStorage"]
    found.update({("torch", name): t for name, t in _TORCH_DTYPES.items()})
    return found


# The names a checkpoint's pickle may refer to (what each resolves to: _allowed_globals).
ALLOWED_GLOBALS = frozenset(_allowed_globals(limits.Budget("", 0)))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names in ALLOWED_GLOBALS, to this file's ``allowed`` objects;
    storages come from ``load_storage``."""

    def __init__(self, stream, file_name, allowed, load_storage=None):
        super().__init__(stream, encoding="utf-8")
        self._file_name = file_name
        self._allowed = allowed
        self._load_storage = load_storage

    def find_class(self, module, name):
        found = self._allowed.get((module, name))
        if found is None:
            raise DecafFormatError(
                f"refusing to load global {module}.{name} from {self._file_name}: "
                f"only tensor-rebuilding globals are allowed"
            )
        return found

    def persistent_load(self, pid):
        if self._load_storage is None:
            raise _Malformed("unexpected persistent id outside the object pickle")
        return self._load_storage(pid)


# ----------------------------------------------------------------------------------------
# the two container formats


def read_torch_checkpoint(path, max_bytes=None):
    """Read a PyTorch checkpoint; return an ordered ``{dotted name: np.ndarray}`` dict.

    See the module docstring for naming.  Raises FileNotFoundError if ``path``
    does not exist and DecafFormatError for anything wrong with its contents,
    including globals other than the tensor-rebuilding ones.  ``max_bytes`` caps
    what the file may make decaf allocate in total (default: see
    decaf/io/limits.py, or the environment variable ``DECAF_MAX_READ_BYTES``).
    """
    name = os.fspath(path)
    with open(name, "rb") as stream:
        file_size = os.fstat(stream.fileno()).st_size
        budget = limits.Budget(name, file_size, max_bytes)
        state = {"stage": "reading the file"}
        try:
            if file_size == 0:
                raise _Malformed("file is empty")
            head = stream.read(4)
            stream.seek(0)
            if head == b"PK\x03\x04":
                obj = _read_zip(stream, name, file_size, state, budget)
            else:
                # Storages stay views into the map until _flatten copies them out; the
                # map closes itself when the last view is gone.
                mapped = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
                obj = _read_legacy(mapped, name, state, budget)
            state["stage"] = "rebuilding tensors"
            return _flatten(obj, budget)
        except DecafFormatError:
            raise
        except _Malformed as exc:
            raise DecafFormatError(f"{name}: {exc}") from None
        except RecursionError:
            raise DecafFormatError(f"{name}: nested too deeply while {state['stage']}") from None
        except Exception as exc:
            raise DecafFormatError(
                f"{name}: corrupt or not a PyTorch checkpoint: {type(exc).__name__} while "
                f"{state['stage']}: {exc}"
            ) from exc


def _read_zip(stream, name, file_size, state, budget):
    state["stage"] = "opening the zip archive"
    archive = zipfile.ZipFile(stream)
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise _Malformed(
            "zip file is not a PyTorch checkpoint: expected one <dir>/data.pkl entry, "
            f"found {len(pickles)}"
        )
    prefix = pickles[0][: -len("data.pkl")]

    def read_entry(entry_name, expected_size=None):
        try:
            info = archive.getinfo(entry_name)
        except KeyError:
            raise _Malformed(f"zip entry {entry_name!r} is missing") from None
        if info.header_offset + info.compress_size > file_size:
            raise _Malformed(
                f"zip entry {entry_name!r} claims {info.compress_size} bytes at offset "
                f"{info.header_offset}, past the end of the {file_size}-byte file (truncated?)"
            )
        if expected_size is not None and info.file_size != expected_size:
            raise _Malformed(
                f"zip entry {entry_name!r} has {info.file_size} bytes, "
                f"but its storage needs {expected_size}"
            )
        # Charged before anything is inflated, and inflating stops at the declared size:
        # a 1 MB entry declaring 2 GB is refused, one declaring 1 KB yields at most 1 KB.
        budget.spend_bytes(info.file_size, f"zip entry {entry_name!r} ({info.file_size} bytes inflated)")
        data = bytearray(info.file_size)
        view, filled = memoryview(data), 0
        with archive.open(info) as entry:
            while filled < len(data):
                got = entry.readinto(view[filled : filled + (1 << 22)])
                if not got:
                    break
                filled += got
            if filled == len(data) and entry.read(1):
                raise _Malformed(f"zip entry {entry_name!r} is longer than it claims")
        if filled != len(data):
            raise _Malformed(f"zip entry {entry_name!r} is shorter than it claims")
        return data

    byteorder = "<"
    if prefix + "byteorder" in archive.namelist():
        state["stage"] = "reading the byteorder record"
        mark = read_entry(prefix + "byteorder")
        mark = bytes(mark)
        if mark not in (b"little", b"big"):
            raise _Malformed(f"byteorder record must be 'little' or 'big', got {mark[:20]!r}")
        byteorder = "<" if mark == b"little" else ">"

    storages = {}

    def load_storage(pid):
        storage = _storage_from_pid(pid, storages, legacy=False)
        if storage.data is None:
            nbytes = storage.numel * storage.element_type.dtype.itemsize
            state["stage"] = f"reading storage {storage.key!r}"
            storage.data = read_entry(prefix + "data/" + storage.key, nbytes)
            state["stage"] = "unpickling the object"
        return storage

    state["stage"] = "reading data.pkl"
    pickled = read_entry(pickles[0])
    state["stage"] = "unpickling the object"
    reader = _ByteReader(pickled)
    obj = _load_pickle(reader, name, budget, load_storage)
    _set_byteorder(storages.values(), byteorder)
    return obj


def _read_legacy(buffer, name, state, budget):
    reader = _ByteReader(buffer)

    def load_plain():
        return _load_pickle(reader, name, budget)

    state["stage"] = "reading the magic number"
    try:
        magic = load_plain()
    except DecafFormatError:
        raise
    except Exception:
        raise _Malformed(
            "not a PyTorch checkpoint: neither a zip archive nor a legacy torch.save file "
            "(the first pickle, the magic number, is unreadable)"
        ) from None
    if magic != LEGACY_MAGIC:
        raise _Malformed(
            "not a PyTorch checkpoint: bad magic number "
            f"{_short_repr(magic)} (expected {LEGACY_MAGIC:#x})"
        )
    state["stage"] = "reading the protocol version"
    version = load_plain()
    if version != LEGACY_PROTOCOL_VERSION:
        raise _Malformed(
            f"unsupported legacy protocol version {_short_repr(version)} "
            f"(expected {LEGACY_PROTOCOL_VERSION})"
        )
    state["stage"] = "reading sys_info"
    sys_info = load_plain()
    if not isinstance(sys_info, dict):
        raise _Malformed(f"sys_info must be a dict, got {type(sys_info).__name__}")
    little_endian = sys_info.get("little_endian", True)
    if not isinstance(little_endian, bool):
        raise _Malformed(f"sys_info little_endian must be a bool, got {little_endian!r}")
    byteorder = "<" if little_endian else ">"

    storages = {}
    state["stage"] = "unpickling the object"
    obj = _load_pickle(reader, name, budget, lambda pid: _storage_from_pid(pid, storages, legacy=True))
    state["stage"] = "reading the storage key list"
    keys = load_plain()
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _Malformed("the storage key list must be a list of strings")

    count_format = byteorder + "q"
    for key in keys:
        state["stage"] = f"reading storage {key!r}"
        storage = storages.get(key)
        if storage is None or storage.root is not None:
            raise _Malformed(
                f"the storage key list names {key!r}, which no tensor uses (corrupt key list?)"
            )
        if storage.data is not None:
            raise _Malformed(f"storage {key!r} is listed twice")
        if reader.remaining() < 8:
            raise _Malformed(
                f"file ends before the element count of storage {key!r} (truncated?)"
            )
        (count,) = struct.unpack(count_format, reader.read(8))
        if count != storage.numel:
            raise _Malformed(
                f"storage {key!r} should hold {storage.numel} elements, "
                f"but the file records {count}"
            )
        nbytes = count * storage.element_type.dtype.itemsize
        if reader.remaining() < nbytes:
            raise _Malformed(
                f"storage {key!r} needs {nbytes} bytes but only {reader.remaining()} are left "
                f"in the file (truncated?)"
            )
        storage.data = reader.take(nbytes)
    if reader.remaining():
        raise _Malformed(f"{reader.remaining()} unexpected bytes after the last storage")
    missing = [s.key for s in storages.values() if s.root is None and s.data is None]
    if missing:
        raise _Malformed(f"storage(s) {', '.join(map(repr, missing[:5]))} have no data in the file")
    _set_byteorder(storages.values(), byteorder)
    return obj


def _storage_from_pid(pid, storages, legacy):
    """Resolve ('storage', type, key, location, numel[, view_metadata]) to a _StorageRef."""
    expected_len = 6 if legacy else 5
    if not isinstance(pid, tuple) or len(pid) != expected_len or pid[0] != "storage":
        raise _Malformed(f"unexpected persistent id {_short_repr(pid)}")
    _, element_type, key, location, numel = pid[:5]
    view = pid[5] if legacy else None
    if not isinstance(element_type, _ElementType) or element_type not in _STORAGE_TYPES.values():
        raise _Malformed(f"persistent id names {element_type!r}, not a storage type")
    if not isinstance(key, str) or not isinstance(location, str):
        raise _Malformed(f"malformed persistent id {_short_repr(pid)}")
    if not _is_int(numel) or numel < 0:
        raise _Malformed(f"storage {key!r} has an invalid element count {numel!r}")
    storage = storages.get(key)
    if storage is None:
        storage = storages[key] = _StorageRef(key, element_type, numel)
    elif storage.element_type is not element_type or storage.numel != numel:
        raise _Malformed(f"storage {key!r} is described twice, differently")
    if view is None:
        return storage
    # Old torch could save slices of a storage: (view_key, offset, size) in elements.
    if (
        not isinstance(view, tuple)
        or len(view) != 3
        or not isinstance(view[0], str)
        or not all(_is_int(n) and n >= 0 for n in view[1:])
    ):
        raise _Malformed(f"malformed storage view {_short_repr(view)}")
    view_key, offset, size = view
    if offset + size > numel:
        raise _Malformed(f"storage view {view_key!r} runs past the end of storage {key!r}")
    existing = storages.get(view_key)
    if existing is None:
        existing = storages[view_key] = _StorageRef(view_key, element_type, size, storage, offset)
    elif existing.root is not storage or existing.offset != offset or existing.numel != size:
        raise _Malformed(f"storage view {view_key!r} is described twice, differently")
    return existing


def _set_byteorder(storages, byteorder):
    for storage in storages:
        storage.byteorder = byteorder


class _ByteReader:
    """A read-only file over bytes or an mmap, for pickle.Unpickler; never copies more than asked.

    Reads past the end return short data, so a length field claiming gigabytes costs nothing.
    """

    def __init__(self, buffer):
        self._buffer = buffer  # bytes or mmap: both have .find
        self._view = memoryview(buffer)
        self._pos = 0

    def remaining(self):
        return len(self._view) - self._pos

    def tell(self):
        return self._pos

    def seek(self, pos):
        self._pos = pos

    def take(self, n):
        chunk = self._view[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.remaining()
        return bytes(self.take(n))

    def readinto(self, buffer):
        chunk = self.take(len(buffer))
        memoryview(buffer).cast("B")[: len(chunk)] = chunk
        return len(chunk)

    def readline(self, limit=-1):
        end = len(self._view)
        if limit is not None and limit >= 0:
            end = min(end, self._pos + limit)
        newline = self._buffer.find(b"\n", self._pos, end)
        return self.read((newline + 1 if newline >= 0 else end) - self._pos)


def _load_pickle(reader, file_name, budget, load_storage=None):
    """Unpickle one pickle from reader with the restricted unpickler, after a safety scan.

    The C unpickler grows its memo table to the largest index a PUT names, so
    six bytes (``]r\x11"]S``) can ask for gigabytes.  A pure-Python pass over
    the opcodes (nothing is executed) first refuses memo indices larger than
    the pickle could legitimately use, and counts the opcodes: the work the
    rebuilding may do is granted in proportion (limits.WORK_PER_OPCODE).
    """
    start = reader.tell()
    limit = reader.remaining()
    count = 0
    with warnings.catch_warnings():
        # genops decodes STRING arguments with codecs.escape_decode, which warns
        # about odd escapes in garbage input.
        warnings.simplefilter("ignore", DeprecationWarning)
        for opcode, arg, _ in pickletools.genops(reader):
            count += 1
            if count > limits.MAX_PICKLE_OPS:
                raise _Malformed(f"the pickle has more than {limits.MAX_PICKLE_OPS} opcodes")
            if opcode.name in _MEMO_PUTS and not 0 <= arg <= limit:
                raise _Malformed(f"pickle memo index {arg} is out of range")
    budget.allow_work_for(count)
    reader.seek(start)
    return _RestrictedUnpickler(reader, file_name, _allowed_globals(budget), load_storage).load()


_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


# ----------------------------------------------------------------------------------------
# from placeholders to arrays


def _flatten(obj, budget):
    out = {}
    nodes = 0

    def child_name(prefix, key):
        key = str(key)
        size = len(prefix) + 1 + len(key) if prefix else len(key)
        if size > limits.MAX_NAME_BYTES:
            raise _Malformed(f"a tensor name is {size} characters long "
                             f"(limit {limits.MAX_NAME_BYTES}): {_short_repr(prefix + '.' + key)}")
        budget.spend_bytes(size, "tensor names")
        return f"{prefix}.{key}" if prefix else key

    def visit(value, prefix, depth):
        nonlocal nodes
        nodes += 1
        if nodes > _MAX_NODES:
            raise _Malformed(f"the object has more than {_MAX_NODES} parts")
        if depth > _MAX_DEPTH:
            raise _Malformed(f"the object is nested more than {_MAX_DEPTH} levels deep")
        budget.spend_work(1, "walking the unpickled object")
        if isinstance(value, _TensorRef):
            if prefix in out:
                raise _Malformed(f"two tensors flatten to the same name {_short_repr(prefix)}")
            out[prefix] = _materialize(value, prefix, budget)
        elif isinstance(value, (dict, list, tuple)):
            # (a memoised container can be reached many times: each visit pays for its items)
            budget.spend_work(len(value), "walking the unpickled object")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(item, (_TensorRef, dict, list, tuple)):
                    visit(item, child_name(prefix, key), depth + 1)

    visit(obj, "", 0)
    return out


def _materialize(ref, name, budget):
    if ref.array is not None:
        return ref.array
    where = f"tensor {name!r}" if name else "the tensor"
    storage = ref.storage
    root = storage.root or storage
    if root.data is None:
        raise _Malformed(f"{where}: storage {root.key!r} has no data")
    raw = np.dtype(ref.dtype.dtype).newbyteorder(root.byteorder)
    base = storage.offset * root.element_type.dtype.itemsize  # bytes into root
    nbytes = storage.numel * storage.element_type.dtype.itemsize
    elements = np.frombuffer(root.data, dtype=np.uint8, count=nbytes, offset=base)
    count = nbytes // raw.itemsize
    elements = elements[: count * raw.itemsize].view(raw)

    size, stride = ref.size, ref.stride
    n = math.prod(size)
    if n == 0:
        array = np.empty(size, raw)
    else:
        last = ref.offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= count:
            raise _Malformed(
                f"{where}: size {list(size)}, stride {list(stride)} and offset {ref.offset} "
                f"reach element {last}, but storage {storage.key!r} has only {count}"
            )
        if n > count and n * raw.itemsize > _MAX_EXPANDED_BYTES:
            raise _Malformed(
                f"{where}: expands {count} stored elements to {n}; refusing to allocate "
                f"{n * raw.itemsize} bytes"
            )
        budget.spend_bytes(n * raw.itemsize, f"{where} ({list(size)} of {ref.dtype})")
        view = np.lib.stride_tricks.as_strided(
            elements[ref.offset :],
            shape=size,
            strides=[st * raw.itemsize for st in stride],
            writeable=False,
        )
        array = np.array(view, order="C")
    array = array.astype(raw.newbyteorder("="), copy=False)
    if ref.dtype.bfloat16:
        budget.spend_bytes(4 * array.size, f"{where} as float32")
        array = (array.astype(np.uint32) << 16).view(np.float32)
    if ref.metadata.get("neg") or ref.metadata.get("conj"):
        budget.spend_bytes(array.nbytes, f"{where} negated or conjugated")
    if ref.metadata.get("neg"):
        array = np.negative(array)
    if ref.metadata.get("conj"):
        array = np.conj(array)
    # (not np.ascontiguousarray: it turns 0-d arrays into 1-d ones)
    ref.array = array if array.flags.c_contiguous else np.array(array, order="C")
    return ref.array


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _short_repr(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
