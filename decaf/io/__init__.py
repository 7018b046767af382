"""File I/O: decaf's blob file and readers for other frameworks' files."""

from .blobfile import read_blobfile, write_blobfile
from .errors import DecafFormatError
from .models import load_model, read_foreign
from .torch_reader import read_torch_checkpoint

__all__ = ["DecafFormatError", "read_blobfile", "write_blobfile", "read_torch_checkpoint", "load_model",
           "read_foreign"]
