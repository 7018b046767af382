"""How much memory and work one file may make decaf spend: the budgets every reader charges.

A small file must not be able to make a reader allocate gigabytes (an expanded
view, a zip entry that inflates a thousandfold, megabytes of tensor names built
from one memoised string) or loop for minutes (one shared sub-object visited a
million times).  Each reader therefore charges what it allocates and what it
does, *before* doing it, to a :class:`Budget` made for that one file, and stops
with :class:`DecafFormatError` naming the file and the limit when the budget is
spent.

Bytes: by default a file may make decaf allocate ``AMPLIFICATION`` times its own
size plus ``SLACK_BYTES`` (an honest checkpoint needs about one to two times its
size: the storages read, then the arrays copied out).  Raise it per call with
``max_bytes=`` or for the whole process with the environment variable
``DECAF_MAX_READ_BYTES`` (an absolute number of bytes; ``k``/``M``/``G``
suffixes accepted).  ``max_bytes=`` wins over the variable.

Work: pickle opcodes are capped at ``MAX_PICKLE_OPS``; the steps spent rebuilding
objects and walking them (dict entries built, nodes visited) at
``WORK_PER_OPCODE`` per opcode plus ``WORK_SLACK`` -- an honest pickle builds each
part with its own opcodes, only shared sub-objects multiply the work.
"""
import os

from .errors import DecafFormatError

__all__ = ["Budget", "byte_limit", "ENV_MAX_READ_BYTES", "AMPLIFICATION", "SLACK_BYTES",
           "MAX_PICKLE_OPS", "WORK_PER_OPCODE", "WORK_SLACK", "MAX_NAME_BYTES"]

ENV_MAX_READ_BYTES = "DECAF_MAX_READ_BYTES"
AMPLIFICATION = 4
SLACK_BYTES = 64 << 20
MAX_PICKLE_OPS = 10_000_000
WORK_PER_OPCODE = 4
WORK_SLACK = 100_000
# One tensor name (a dotted path); real ones are well under a kilobyte.
MAX_NAME_BYTES = 64 << 10

_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def byte_limit(file_size, max_bytes=None):
    """The byte budget for one file of ``file_size`` bytes (see the module docstring)."""
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative int, got {max_bytes!r}")
        return max_bytes
    text = os.environ.get(ENV_MAX_READ_BYTES, "").strip()
    if text:
        return _parse_bytes(text)
    return AMPLIFICATION * file_size + SLACK_BYTES


def _parse_bytes(text):
    number, scale = text, 1
    if text[-1].lower() in _SUFFIXES:
        number, scale = text[:-1], _SUFFIXES[text[-1].lower()]
    try:
        value = int(number) * scale
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{ENV_MAX_READ_BYTES}={text!r} is not a number of bytes "
                         f"(e.g. 8589934592 or 8G)")
    return value


class Budget:
    """What one file may still cost: bytes to allocate and steps of work.

    ``spend_bytes``/``spend_work`` raise DecafFormatError once a limit would be
    passed, so callers charge *before* allocating or looping.
    """

    def __init__(self, source, file_size, max_bytes=None):
        self.source = source
        self.max_bytes = byte_limit(file_size, max_bytes)
        self.bytes = 0
        self.max_work = WORK_SLACK
        self.work = 0

    def spend_bytes(self, nbytes, what):
        self.bytes += int(nbytes)
        if self.bytes > self.max_bytes:
            raise DecafFormatError(
                f"{self.source}: {what} would bring what this file makes decaf allocate to "
                f"{self.bytes} bytes, over the limit of {self.max_bytes} (a hostile or broken file? "
                f"if it is trusted, raise the limit with max_bytes= or {ENV_MAX_READ_BYTES})")

    def allow_work_for(self, opcodes):
        """Grant WORK_PER_OPCODE steps for each of ``opcodes`` opcodes read."""
        self.max_work += WORK_PER_OPCODE * opcodes

    def spend_work(self, steps, what):
        self.work += steps
        if self.work > self.max_work:
            raise DecafFormatError(
                f"{self.source}: {what}: more than {self.max_work} steps of work for a file this "
                f"size (shared sub-objects repeated over and over?)")
