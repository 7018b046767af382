"""The server's limits, and the JSON error every refusal becomes."""
from dataclasses import asdict, dataclass


@dataclass
class Limits:
    max_upload_bytes: int = 16 * 1024 * 1024   # one request's body
    max_pixels: int = 40_000_000                # one image's width * height, read from its header
    max_images: int = 16                        # images in one request
    max_queue: int = 256                        # images waiting for the inference thread
    request_timeout: float = 30.0               # seconds from the request's arrival to its answer
    max_batch: int = 16                         # crops in one forward pass
    batch_wait_ms: float = 5.0                  # how long a minibatch waits for company
    decode_threads: int = 2                     # images decoded at once (bounds decoding memory)

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not value > 0 and not (name == "batch_wait_ms" and value == 0):
                raise ValueError(f"limit {name} must be positive, got {value!r}")

    def to_dict(self):
        return asdict(self)


class ApiError(Exception):
    """A refused request: the HTTP status, a stable code for programs, a message for people."""

    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers

    def body(self):
        return {"error": {"code": self.code, "message": self.message}}


class ImageRejected(ValueError):
    """One image of a request could not be used; the others go on."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message

    def body(self):
        return {"code": self.code, "message": self.message}
