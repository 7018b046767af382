"""A small protocol-buffers codec (binary wire format and text format), no dependencies.

Converters need to read Caffe's ``.caffemodel`` (a binary ``NetParameter``) and
``.prototxt`` (the same message in protobuf's text format).  Rather than depend on
the ``protobuf`` package and generated code, this module decodes and encodes
messages from a *schema* declared in Python (see :class:`Message`), into plain
data: a message is a ``dict`` {field name: value}; repeated fields are lists
(``array=True`` float fields are NumPy arrays); enum values are their names;
nested messages are dicts.

Binary wire format (https://protobuf.dev/programming-guides/encoding/)::

    message  := (key value)*          key = varint (field_number << 3 | wire_type)
    wire type 0  varint         int32/64, uint32/64, sint32/64 (zigzag), bool, enum
    wire type 1  8 bytes (LE)   double, fixed64, sfixed64
    wire type 2  varint length, then that many bytes:
                                string, bytes, nested message, or a *packed*
                                repeated scalar field (the values back to back)
    wire type 5  4 bytes (LE)   float, fixed32, sfixed32
    (3 and 4 are the deprecated groups: refused)

A varint is 7 bits per byte, least significant group first, high bit set on every
byte but the last; at most 10 bytes.  Negative int32/int64 are sign-extended to 64
bits (so always 10 bytes).  Fields may come in any order; unknown field numbers are
skipped; a non-repeated field given twice keeps the last value (messages merge).

Text format (``.prototxt``)::

    name: "CaffeNet"                # comments run from '#' to the end of the line
    input_dim: 10
    layer { name: "conv1" type: "Convolution"
            convolution_param { num_output: 96 kernel_size: 11 } }
    pool: MAX                       # enum values by name
    dim: [1, 3, 227, 227]           # a repeated scalar field in list form

A ``key { ... }`` (or ``key: { ... }``, ``key < ... >``) is a nested message;
``key: value`` a scalar; strings take single or double quotes with C escapes and
adjacent strings concatenate; fields may be separated by ',' or ';'.

Every problem with the input raises :class:`~decaf.io.errors.DecafFormatError`
whose message starts with the file name and says what is wrong and where (byte
offset and field path for binary, line and column for text).
"""
import math
import struct

import numpy as np

from .errors import DecafFormatError

__all__ = ["Field", "Message", "decode", "encode", "parse_text", "format_text",
           "encode_varint", "read_varint"]

MAX_DEPTH = 64

VARINT_KINDS = {"int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool", "enum"}
FIXED64_KINDS = {"double": "<d", "fixed64": "<Q", "sfixed64": "<q"}
FIXED32_KINDS = {"float": "<f", "fixed32": "<I", "sfixed32": "<i"}
LENGTH_KINDS = {"string", "bytes", "message"}
INT_KINDS = {"int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed64", "sfixed64",
             "fixed32", "sfixed32"}
FLOAT_KINDS = {"float", "double"}
_INT_RANGES = {"int32": (-2**31, 2**31 - 1), "sint32": (-2**31, 2**31 - 1), "sfixed32": (-2**31, 2**31 - 1),
               "int64": (-2**63, 2**63 - 1), "sint64": (-2**63, 2**63 - 1), "sfixed64": (-2**63, 2**63 - 1),
               "uint32": (0, 2**32 - 1), "fixed32": (0, 2**32 - 1),
               "uint64": (0, 2**64 - 1), "fixed64": (0, 2**64 - 1)}
WIRE_NAMES = {0: "varint", 1: "64-bit", 2: "length-delimited", 3: "group start", 4: "group end", 5: "32-bit"}


class Field:
    """One field of a message schema.

    ``kind`` is a scalar type name ("int32", "float", "string", "enum", ...) or
    "message" (then ``message`` is the :class:`Message`); ``enum`` maps value names
    to numbers; ``packed`` says how the writer emits a repeated scalar (the reader
    accepts both forms); ``array`` decodes a repeated float/double field into one
    NumPy array instead of a list.
    """

    def __init__(self, number, name, kind, repeated=False, message=None, enum=None, packed=False,
                 array=False, default=None):
        if kind not in VARINT_KINDS | set(FIXED64_KINDS) | set(FIXED32_KINDS) | LENGTH_KINDS:
            raise ValueError(f"field {name!r}: unknown kind {kind!r}")
        self.number, self.name, self.kind = number, name, kind
        self.repeated, self.message, self.packed, self.array = repeated, message, packed, array
        self.enum = dict(enum or {})
        self.enum_names = {v: k for k, v in self.enum.items()}
        self.default = default

    def __repr__(self):
        return f"Field({self.number}, {self.name!r}, {self.kind}{'*' if self.repeated else ''})"


class Message:
    """A message schema: fields by number and by name.

    ``strict`` makes the *text* parser refuse field names it does not know (binary
    decoding always skips unknown field numbers, as protobuf does).
    """

    def __init__(self, name, fields=(), strict=False):
        self.name = name
        self.strict = strict
        self.by_number, self.by_name = {}, {}
        for f in fields:
            self.add(f)

    def add(self, field):
        if field.number in self.by_number or field.name in self.by_name:
            raise ValueError(f"{self.name}: duplicate field {field}")
        self.by_number[field.number] = field
        self.by_name[field.name] = field
        return field

    def __repr__(self):
        return f"Message({self.name!r}, {len(self.by_number)} fields)"


def _error(source, message):
    return DecafFormatError(f"{source}: {message}")


# ---- varints --------------------------------------------------------------------
def encode_varint(value):
    """Bytes of a varint; negative values are written as 64-bit two's complement."""
    value = int(value)
    if value < 0:
        value += 1 << 64
    if not 0 <= value < 1 << 64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(buf, pos, end, source="<bytes>", where=""):
    """(value, new position) of the varint at ``buf[pos:end]``; value is unsigned 64-bit."""
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise _error(source, f"truncated varint at byte {start}{_in(where)}")
        byte = buf[pos]
        pos += 1
        if shift == 63 and byte > 1:
            raise _error(source, f"varint at byte {start} overflows 64 bits{_in(where)}")
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _error(source, f"varint at byte {start} is longer than 10 bytes{_in(where)}")


def _in(where):
    return f" (in {where})" if where else ""


def _signed64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def _varint_value(kind, v):
    if kind in ("int64", "enum"):
        v = _signed64(v)
        if kind == "enum":
            v = ((v + 2**31) % 2**32) - 2**31
        return v
    if kind == "int32":
        return ((v + 2**31) % 2**32) - 2**31   # protobuf truncates to 32 bits
    if kind == "uint32":
        return v & 0xFFFFFFFF
    if kind == "uint64":
        return v
    if kind == "sint32":
        v &= 0xFFFFFFFF
        return (v >> 1) ^ -(v & 1)
    if kind == "sint64":
        return (v >> 1) ^ -(v & 1)
    if kind == "bool":
        return v != 0
    raise AssertionError(kind)


def _varint_raw(kind, value):
    """The unsigned varint payload for a value of a varint kind."""
    if kind == "bool":
        return 1 if value else 0
    value = int(value)
    if kind in ("sint32", "sint64"):
        return (value << 1) ^ (value >> 63) if kind == "sint64" else ((value << 1) ^ (value >> 31)) & 0xFFFFFFFF
    return value


# ---- binary decoding ----------------------------------------------------------------
def decode(schema, data, source="<bytes>"):
    """Decode the binary message ``data`` (bytes-like) with ``schema`` into a dict."""
    buf = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    return _decode(schema, buf, 0, len(buf), source, schema.name, 0)


def _wire_ok(field, wt):
    k = field.kind
    if k in VARINT_KINDS:
        return wt == 0 or (wt == 2 and field.repeated)
    if k in FIXED64_KINDS:
        return wt == 1 or (wt == 2 and field.repeated)
    if k in FIXED32_KINDS:
        return wt == 5 or (wt == 2 and field.repeated)
    return wt == 2


def _decode(schema, buf, pos, end, source, where, depth):
    if depth > MAX_DEPTH:
        raise _error(source, f"messages nested more than {MAX_DEPTH} deep (at {where})")
    out = {}
    chunks = {}   # array fields: name -> list of numpy chunks
    merges = {}   # non-repeated message fields given more than once: name -> [sub, ...]
    while pos < end:
        key_at = pos
        key, pos = read_varint(buf, pos, end, source, where)
        number, wt = key >> 3, key & 7
        if number == 0 or number >= 2**29:
            raise _error(source, f"invalid field number {number} at byte {key_at} (in {where})")
        if wt == 0:
            value, pos = read_varint(buf, pos, end, source, where)
        elif wt == 1 or wt == 5:
            size = 8 if wt == 1 else 4
            if pos + size > end:
                raise _error(source, f"truncated {size * 8}-bit value of field {number} at byte {pos} "
                                     f"(in {where}): {end - pos} byte(s) left")
            value = buf[pos:pos + size]
            pos += size
        elif wt == 2:
            length, pos = read_varint(buf, pos, end, source, where)
            if length > end - pos:
                raise _error(source, f"field {number} at byte {key_at} (in {where}) claims {length} bytes "
                                     f"but only {end - pos} remain: the file is truncated or corrupt")
            value = (pos, pos + length)
            pos += length
        elif wt in (3, 4):
            raise _error(source, f"field {number} at byte {key_at} (in {where}) uses the deprecated "
                                 f"group wire type {wt}, which is not supported")
        else:
            raise _error(source, f"invalid wire type {wt} for field {number} at byte {key_at} (in {where})")
        field = schema.by_number.get(number)
        if field is None:
            continue                       # unknown field: skip, as protobuf does
        fwhere = f"{where}.{field.name}"
        if not _wire_ok(field, wt):
            raise _error(source, f"field {fwhere} ({field.kind}) at byte {key_at} has wire type "
                                 f"{WIRE_NAMES[wt]}, which does not fit its type")
        if field.kind == "message":
            sub = _decode(field.message, buf, value[0], value[1], source,
                          f"{fwhere}[{len(out.get(field.name, []))}]" if field.repeated else fwhere, depth + 1)
            if field.repeated:
                out.setdefault(field.name, []).append(sub)
            else:
                _defer_merge(out, merges, field.name, sub)
            continue
        if field.kind in ("string", "bytes"):
            raw = bytes(buf[value[0]:value[1]])
            if field.kind == "string":
                try:
                    raw = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise _error(source, f"string field {fwhere} at byte {key_at} is not valid UTF-8") from None
            _store(out, field, [raw])
            continue
        # scalar numeric field: one value, or a packed run
        if wt == 2:
            values = _unpack(field, buf, value[0], value[1], source, fwhere)
        elif wt == 0:
            values = [_varint_value(field.kind, value)]
        else:
            values = [struct.unpack(FIXED64_KINDS.get(field.kind) or FIXED32_KINDS[field.kind], value)[0]]
        if field.kind == "enum":
            values = [field.enum_names.get(v, v) for v in values]
        if field.array:
            chunks.setdefault(field.name, []).append(
                values if isinstance(values, np.ndarray) else np.asarray(values, _np_kind(field.kind)))
        else:
            if isinstance(values, np.ndarray):
                values = values.tolist()
            _store(out, field, values)
    for name, parts in chunks.items():
        out[name] = parts[0].copy() if len(parts) == 1 else np.concatenate(parts)
    _finish_merges(out, merges)
    return out


def _np_kind(kind):
    return {"float": np.float32, "double": np.float64}.get(kind, np.int64)


def _unpack(field, buf, start, stop, source, where):
    k = field.kind
    if k in FIXED32_KINDS or k in FIXED64_KINDS:
        fmt = FIXED32_KINDS.get(k) or FIXED64_KINDS[k]
        size = struct.calcsize(fmt)
        if (stop - start) % size:
            raise _error(source, f"packed field {where} has {stop - start} bytes, not a multiple of {size}")
        dtype = np.dtype(fmt)
        return np.frombuffer(buf[start:stop], dtype).astype(dtype.newbyteorder("="))
    values = []
    pos = start
    while pos < stop:
        v, pos = read_varint(buf, pos, stop, source, where)
        values.append(_varint_value(k, v))
    return values


def _store(out, field, values):
    if field.repeated:
        out.setdefault(field.name, []).extend(values)
    elif values:
        out[field.name] = values[-1]


# A non-repeated message field given n times is the protobuf merge of the n messages. Merging
# them one by one copies the repeated fields gathered so far each time: quadratic (160k repeats
# of a small message, an 800 KB file, took a minute). So the parts are kept and merged once.
def _defer_merge(out, merges, name, sub):
    if name in merges:
        merges[name].append(sub)
    elif name in out:
        merges[name] = [out[name], sub]
    else:
        out[name] = sub


def _finish_merges(out, merges):
    for name, parts in merges.items():
        out[name] = _merge_all(parts)


def _merge_all(messages):
    """Protobuf merge of decoded messages, in order, in time linear in their total size:
    repeated fields concatenate, nested messages merge, the rest keep the last value."""
    if len(messages) == 1:
        return messages[0]
    values = {}                      # key -> every value it has, in order (keys keep first-seen order)
    for message in messages:
        for key, value in message.items():
            values.setdefault(key, []).append(value)
    out = {}
    for key, parts in values.items():
        last = parts[-1]
        if len(parts) == 1:
            out[key] = last
        elif all(isinstance(p, list) for p in parts):
            out[key] = [item for p in parts for item in p]
        elif all(isinstance(p, np.ndarray) for p in parts):
            out[key] = np.concatenate(parts)
        elif all(isinstance(p, dict) for p in parts):
            out[key] = _merge_all(parts)
        else:
            out[key] = last
    return out


def _merge(into, other):
    """Protobuf merge of ``other`` into the decoded message ``into``."""
    merged = _merge_all([into, other])
    into.clear()
    into.update(merged)


# ---- binary encoding ---------------------------------------------------------------------
def encode(schema, value):
    """The binary encoding of the message ``value`` (a dict) as bytes."""
    chunks, _ = _encode(schema, value, schema.name)
    return b"".join(chunks)


def encode_chunks(schema, value):
    """(list of byte chunks, total size): encoding without copying big arrays twice."""
    return _encode(schema, value, schema.name)


def _key(number, wt):
    return encode_varint(number << 3 | wt)


def _encode(schema, value, where):
    if not isinstance(value, dict):
        raise TypeError(f"{where}: expected a dict for message {schema.name}, got {type(value).__name__}")
    unknown = set(value) - set(schema.by_name)
    if unknown:
        raise KeyError(f"{where}: message {schema.name} has no field(s) {sorted(unknown)}")
    chunks, size = [], 0

    def put(b):
        nonlocal size
        chunks.append(b)
        size += len(b)

    for field in sorted(schema.by_number.values(), key=lambda f: f.number):
        if field.name not in value or value[field.name] is None:
            continue
        v = value[field.name]
        fwhere = f"{where}.{field.name}"
        items = v if field.repeated else [v]
        if field.repeated and isinstance(v, (str, bytes, dict)):
            raise TypeError(f"{fwhere}: repeated field needs a list")
        if field.kind == "message":
            for item in items:
                sub, subsize = _encode(field.message, item, fwhere)
                put(_key(field.number, 2) + encode_varint(subsize))
                chunks.extend(sub)
                size += subsize
        elif field.kind in ("string", "bytes"):
            for item in items:
                raw = item.encode("utf-8") if isinstance(item, str) else bytes(item)
                put(_key(field.number, 2) + encode_varint(len(raw)) + raw)
        elif field.repeated and field.packed:
            if len(items) == 0:
                continue
            payload = _scalar_payload(field, items, fwhere)
            put(_key(field.number, 2) + encode_varint(len(payload)))
            put(payload)
        else:
            wt = 0 if field.kind in VARINT_KINDS else (1 if field.kind in FIXED64_KINDS else 5)
            key = _key(field.number, wt)
            for item in (items.tolist() if isinstance(items, np.ndarray) else items):
                put(key + _scalar_payload(field, [item], fwhere))
    return chunks, size


def _scalar_payload(field, items, where):
    k = field.kind
    if k in FIXED32_KINDS or k in FIXED64_KINDS:
        fmt = FIXED32_KINDS.get(k) or FIXED64_KINDS[k]
        return np.ascontiguousarray(np.asarray(items, np.dtype(fmt))).tobytes()
    out = bytearray()
    for item in items:
        if k == "enum" and isinstance(item, str):
            if item not in field.enum:
                raise ValueError(f"{where}: {item!r} is not a value of the enum (values: {sorted(field.enum)})")
            item = field.enum[item]
        if k in _INT_RANGES:
            lo, hi = _INT_RANGES[k]
            if not lo <= int(item) <= hi:
                raise ValueError(f"{where}: {item} is out of range for {k}")
        out += encode_varint(_varint_raw(k, item))
    return bytes(out)


# ---- text format: tokens -----------------------------------------------------------------
_PUNCT = set("{}<>[]:,;")


class _Tok:
    __slots__ = ("kind", "text", "value", "line", "col")

    def __init__(self, kind, text, value, line, col):
        self.kind, self.text, self.value, self.line, self.col = kind, text, value, line, col


def _tokenize(text, source):
    toks = []
    i, n, line, line_start = 0, len(text), 1, 0
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
            line_start = i
            continue
        if c in " \t\r\f\v":
            i += 1
            continue
        col = i - line_start + 1
        if c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c in _PUNCT:
            toks.append(_Tok("punct", c, c, line, col))
            i += 1
            continue
        if c in "\"'":
            value, i = _read_string(text, i, source, line, col)
            if toks and toks[-1].kind == "string":     # adjacent strings concatenate
                toks[-1].value += value
            else:
                toks.append(_Tok("string", text[i - 1:i], value, line, col))
            continue
        if c.isalnum() or c in "_-+.":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in "_.+-"):
                # a sign is part of a token only right after an exponent 'e'
                if text[j] in "+-" and text[j - 1] not in "eE":
                    break
                j += 1
            word = text[i:j]
            kind = "ident" if (c.isalpha() or c == "_") else "number"
            toks.append(_Tok(kind, word, word, line, col))
            i = j
            continue
        if c == "/" and text.startswith("//", i):
            raise _error(source, f"line {line}, column {col}: '//' comments are not protobuf text format "
                                 f"(use '#')")
        raise _error(source, f"line {line}, column {col}: unexpected character {c!r}")
    return toks


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b",
            "f": "\f", "v": "\v", "?": "?"}


def _read_string(text, i, source, line, col):
    quote = text[i]
    i += 1
    out = []
    n = len(text)
    while True:
        if i >= n or text[i] == "\n":
            raise _error(source, f"line {line}, column {col}: unterminated string")
        c = text[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= n:
                raise _error(source, f"line {line}, column {col}: unterminated string")
            e = text[i + 1]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
                i += 2
            elif e in "01234567":
                j = i + 1
                while j < min(i + 4, n) and text[j] in "01234567":
                    j += 1
                out.append(chr(int(text[i + 1:j], 8)))
                i = j
            elif e == "x":
                j = i + 2
                while j < min(i + 4, n) and text[j] in "0123456789abcdefABCDEF":
                    j += 1
                if j == i + 2:
                    raise _error(source, f"line {line}, column {col}: bad \\x escape in string")
                out.append(chr(int(text[i + 2:j], 16)))
                i = j
            else:
                raise _error(source, f"line {line}, column {col}: unknown escape \\{e} in string")
            continue
        out.append(c)
        i += 1


# ---- text format: parsing ---------------------------------------------------------------
class _Parser:
    def __init__(self, toks, source):
        self.toks, self.i, self.source = toks, 0, source

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self, what):
        tok = self.peek()
        if tok is None:
            raise _error(self.source, f"unexpected end of file: expected {what}")
        self.i += 1
        return tok

    def fail(self, tok, message):
        if tok is None:
            return _error(self.source, f"at end of file: {message}")
        return _error(self.source, f"line {tok.line}, column {tok.col}: {message}")

    def accept(self, text):
        tok = self.peek()
        if tok is not None and tok.kind == "punct" and tok.text == text:
            self.i += 1
            return True
        return False

    def message(self, schema, close, where, depth):
        """Fields until ``close`` ('}' or '>') or the end (close None)."""
        if depth > MAX_DEPTH:
            raise self.fail(self.peek(), f"messages nested more than {MAX_DEPTH} deep")
        out = {}
        pending = ({}, {})   # (array field -> [chunks], message field -> [parts]): joined once at the end
        while True:
            tok = self.peek()
            if tok is None:
                if close is None:
                    return _finish_text_message(out, pending)
                raise self.fail(tok, f"missing {close!r} to close {where}")
            if tok.kind == "punct" and tok.text == close:
                self.i += 1
                return _finish_text_message(out, pending)
            if tok.kind == "punct" and tok.text == "[":
                raise self.fail(tok, "extension fields ('[...]') are not supported")
            if tok.kind != "ident":
                raise self.fail(tok, f"expected a field name in {where}, got {tok.text!r}")
            self.i += 1
            field = schema.by_name.get(tok.text) if schema is not None else None
            if field is None and schema is not None and schema.strict:
                known = ", ".join(sorted(schema.by_name))
                raise self.fail(tok, f"{where} has no field {tok.text!r} (fields: {known})")
            self.field(out, pending, field, tok, f"{where}.{tok.text}", depth)
            if not self.accept(","):
                self.accept(";")

    def field(self, out, pending, field, name_tok, where, depth):
        colon = self.accept(":")
        tok = self.peek()
        is_block = tok is not None and tok.kind == "punct" and tok.text in "{<"
        if field is not None and field.kind == "message" and not is_block:
            if tok is not None and tok.kind == "punct" and tok.text == "[" and field.repeated:
                pass
            else:
                raise self.fail(tok, f"{where} is a message: expected '{{'")
        if is_block:
            if field is not None and field.kind != "message":
                raise self.fail(tok, f"{where} is a {field.kind}, not a message")
            self.i += 1
            sub = self.message(field.message if field is not None else None, "}" if tok.text == "{" else ">",
                               where, depth + 1)
            if field is not None:
                if field.repeated:
                    out.setdefault(field.name, []).append(sub)
                else:
                    _defer_merge(out, pending[1], field.name, sub)
            return
        if not colon:
            raise self.fail(tok, f"expected ':' after field name {name_tok.text!r}")
        if self.accept("["):
            if field is not None and not field.repeated:
                raise self.fail(tok, f"{where} is not repeated: a list value is not allowed")
            values = []
            if not self.accept("]"):
                while True:
                    values.append(self.value(field, where, depth))
                    if self.accept("]"):
                        break
                    if not self.accept(","):
                        raise self.fail(self.peek(), f"expected ',' or ']' in the list for {where}")
        else:
            values = [self.value(field, where, depth)]
        if field is None:
            return
        if field.array:
            pending[0].setdefault(field.name, (field.kind, []))[1].extend(values)
        else:
            _store(out, field, values)

    def value(self, field, where, depth):
        tok = self.peek()
        if tok is not None and tok.kind == "punct" and tok.text in "{<":
            if field is not None and field.kind != "message":
                raise self.fail(tok, f"{where} is a {field.kind}, not a message")
            self.i += 1
            return self.message(field.message if field is not None else None,
                                "}" if tok.text == "{" else ">", where, depth + 1)
        tok = self.next(f"a value for {where}")
        negative = False
        if tok.kind == "number" and tok.text == "-":    # '-' then an identifier such as inf
            negative = True
            tok = self.next(f"a value for {where}")
        if tok.kind == "punct":
            raise self.fail(tok, f"expected a value for {where}, got {tok.text!r}")
        if field is None:
            return tok.value
        return self.convert(field, tok, negative, where)

    def convert(self, field, tok, negative, where):
        k = field.kind
        text = ("-" if negative else "") + tok.text
        if k in ("string", "bytes"):
            if tok.kind != "string":
                raise self.fail(tok, f"{where} needs a quoted string, got {tok.text!r}")
            return tok.value if k == "string" else tok.value.encode("latin-1", "replace")
        if tok.kind == "string":
            raise self.fail(tok, f"{where} is a {k}, got the string {tok.value!r}")
        if k == "bool":
            if text in ("true", "True", "t", "1"):
                return True
            if text in ("false", "False", "f", "0"):
                return False
            raise self.fail(tok, f"{where} needs true or false, got {text!r}")
        if k == "enum":
            if tok.kind == "ident":
                if text not in field.enum:
                    raise self.fail(tok, f"{text!r} is not a value of {where} (values: {', '.join(field.enum)})")
                return text
            number = self._int(tok, text, where, "int32")
            return field.enum_names.get(number, number)
        if k in FLOAT_KINDS:
            low = text.lower()
            body = low.lstrip("-")
            if body in ("inf", "infinity", "inff"):
                return -math.inf if low.startswith("-") else math.inf
            if body in ("nan", "nanf"):
                return math.nan
            try:
                if body.startswith("0x"):
                    return float(int(low, 16))
                return float(low[:-1] if low.endswith("f") else low)
            except ValueError:
                raise self.fail(tok, f"{where} needs a number, got {text!r}") from None
        return self._int(tok, text, where, k)

    def _int(self, tok, text, where, kind):
        try:
            body = text.lstrip("-")
            if body.lower().startswith("0x"):
                value = int(body, 16)
            elif len(body) > 1 and body.startswith("0") and body.isdigit():
                value = int(body, 8)
            else:
                value = int(body, 10)
        except ValueError:
            raise self.fail(tok, f"{where} needs an integer, got {text!r}") from None
        value = -value if text.startswith("-") else value
        lo, hi = _INT_RANGES.get(kind, (-2**31, 2**31 - 1))
        if not lo <= value <= hi:
            raise self.fail(tok, f"{where}: {value} is out of range for {kind}")
        return value


def _finish_text_message(out, pending):
    arrays, merges = pending
    for name, (kind, values) in arrays.items():
        out[name] = np.asarray(values, _np_kind(kind))
    _finish_merges(out, merges)
    return out


def parse_text(schema, text, source="<text>"):
    """Parse protobuf text format ``text`` (str or bytes) into a dict with ``schema``."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _error(source, f"not UTF-8 text (byte {exc.start}): not a text-format file") from None
    parser = _Parser(_tokenize(text, source), source)
    return parser.message(schema, None, schema.name, 0)


# ---- text format: writing ---------------------------------------------------------------
def format_text(schema, value, indent=0):
    """Protobuf text format for the message ``value`` (fields in declaration order)."""
    lines = []
    pad = "  " * indent
    for field in schema.by_name.values():
        if field.name not in value or value[field.name] is None:
            continue
        v = value[field.name]
        items = (v.tolist() if isinstance(v, np.ndarray) else v) if field.repeated else [v]
        for item in items:
            if field.kind == "message":
                lines.append(f"{pad}{field.name} {{")
                body = format_text(field.message, item, indent + 1)
                if body:
                    lines.append(body)
                lines.append(f"{pad}}}")
            else:
                lines.append(f"{pad}{field.name}: {_text_scalar(field, item)}")
    return "\n".join(lines)


def _text_scalar(field, v):
    k = field.kind
    if k in ("string", "bytes"):
        s = v if isinstance(v, str) else bytes(v).decode("latin-1")
        out = []
        for ch in s:
            if ch in "\"\\":
                out.append("\\" + ch)
            elif ch == "\n":
                out.append("\\n")
            elif ord(ch) < 32 or ord(ch) == 127:
                out.append(f"\\{ord(ch):03o}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if k == "bool":
        return "true" if v else "false"
    if k == "enum":
        return v if isinstance(v, str) else field.enum_names.get(int(v), str(int(v)))
    if k in FLOAT_KINDS:
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if k == "float":
            v = float(np.float32(v))
            r = repr(v)
            # shortest repr that round-trips as float32
            for digits in range(1, 10):
                s = f"{v:.{digits}g}"
                if np.float32(float(s)) == np.float32(v):
                    r = s
                    break
            return r
        return repr(v)
    return str(int(v))
