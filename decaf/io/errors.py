"""The one exception raised for every file decaf cannot read.

A truncated download, a flipped bit, a file from some other program or a
checkpoint that tries to smuggle in code all end up here, so callers (the CLI,
converters, tests) need to catch exactly one type.  It subclasses ValueError
because a bad file is a bad *value* handed to a reader.

The message always starts with the file name and then says what is wrong, e.g.::

    net.decaf: header says 4096 bytes of JSON but the file has only 100 bytes
    after the length field
"""


class DecafFormatError(ValueError):
    """A file is truncated, corrupt, of a foreign or unsupported format, or unsafe."""
