"""Uploads, in memory only: the request body (size-limited while it streams in), its multipart
parts, and the decoding of each image with its size checked from the header first.

Nothing here touches the disk: Starlette's own form parser spools files over 1 MB to a temporary
file, so the multipart body is parsed here with python-multipart's streaming parser into bytes.
"""
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from .limits import ApiError, ImageRejected

# Formats a browser or a camera produces. Pillow can open more (EPS would run Ghostscript, some
# are rarely exercised decoders), and an upload must not pick which code runs on the server.
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM")
IMAGE_FIELDS = ("image", "images", "file", "files")


@dataclass
class Upload:
    filename: str
    data: bytes


async def read_body(request, max_bytes):
    """The whole body as bytes; a 413 as soon as it is known to be too large (from Content-Length,
    or while counting a body sent without one)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared = int(declared)
        except ValueError:
            raise ApiError(400, "bad_request", f"Content-Length is not a number: {declared!r}") from None
        if declared > max_bytes:
            raise ApiError(413, "upload_too_large", f"the upload is {declared} bytes; the limit is {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, "upload_too_large", f"the upload is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def images_from_body(body, content_type, max_images):
    """The images of a request: the file parts of a multipart/form-data body (field ``image``,
    repeated for several), or the whole body when it is sent raw (``image/*`` or
    ``application/octet-stream``)."""
    ctype, options = parse_options_header(content_type or "")
    ctype = ctype.decode("latin-1")
    if ctype == "multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise ApiError(400, "bad_request", "multipart/form-data without a boundary")
        uploads = parse_multipart(body, boundary, max_images)
    elif ctype.startswith("image/") or ctype == "application/octet-stream":
        uploads = [Upload("body", body)] if body else []
    else:
        raise ApiError(415, "unsupported_media_type", f"send images as multipart/form-data (field 'image') "
                       f"or as a raw image/* body, not {ctype or 'no Content-Type'}")
    if not uploads:
        raise ApiError(400, "no_images", "the request holds no image (multipart field 'image')")
    return uploads


def parse_multipart(body, boundary, max_images):
    """[Upload] for each part that is a file or is named like an image field; other fields are ignored."""
    parts = []
    state = {}

    def on_part_begin():
        state.update(headers={}, field=b"", value=b"", data=[])

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_part_data(data, start, end):
        state["data"].append(data[start:end])

    def on_part_end():
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        if filename is None and name not in IMAGE_FIELDS:
            return
        parts.append(Upload(filename.decode("utf-8", "replace") if filename else name, b"".join(state["data"])))
        if len(parts) > max_images:
            raise ApiError(413, "too_many_images", f"more than {max_images} images in one request")

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end,
                 "on_part_data": on_part_data, "on_part_end": on_part_end}
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise ApiError(400, "bad_request", f"malformed multipart body ({exc})") from None
    return parts


def decode_image(data, max_pixels, convert=None):
    """Bytes -> ``convert(image)`` (default: the image in RGB), called on the decoded image while
    it is open. The size is read from the header and checked before any pixel is decoded (a
    100-byte PNG can claim 50000 x 50000 pixels: a decompression bomb)."""
    if not data:
        raise ImageRejected("bad_image", "empty file")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageRejected("image_too_large", f"{width}x{height} is {width * height} pixels; "
                                    f"the limit is {max_pixels}")
            img.load()
            return convert(img) if convert else img.convert("RGB")
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected("image_too_large", str(exc)) from None
    except UnidentifiedImageError:
        raise ImageRejected("bad_image", f"not an image in a supported format ({', '.join(FORMATS)})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageRejected("bad_image", f"cannot decode the image ({exc})") from None
