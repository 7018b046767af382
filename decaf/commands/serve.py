"""decaf serve [MODEL] : the web demo and the JSON inference server (uvicorn + Starlette)."""
import ipaddress
import socket
import sys

EXAMPLE = """example:
  decaf serve                            # the pretrained EfficientNet-Lite0 on http://127.0.0.1:8000
  decaf serve caffenet.decaf --port 8080 --max-images 4
  curl -F image=@cat.jpg http://127.0.0.1:8000/v1/classify
It listens on 127.0.0.1 only unless --host says otherwise (e.g. --host 0.0.0.0 for the network).
docs/serve.md describes the API and the limits; /openapi.json describes the API too."""


def add_parser(sub):
    import argparse
    p = sub.add_parser("serve", help="the web demo and a JSON inference server", epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default=None,
                   help="pretrained name or a .decaf file (default: efficientnet_lite0)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--max-upload-mb", type=float, default=16, help="bytes in one request, in MiB (default 16)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="width*height of one image (default 40e6)")
    p.add_argument("--max-images", type=int, default=16, help="images in one request (default 16)")
    p.add_argument("--max-queue", type=int, default=256, help="images waiting for the net (default 256)")
    p.add_argument("--timeout", type=float, default=30, help="seconds for one request (default 30)")
    p.add_argument("--max-batch", type=int, default=16, help="crops in one forward pass (default 16)")
    p.add_argument("--batch-wait-ms", type=float, default=5, help="how long a minibatch waits for more (default 5)")
    p.add_argument("--decode-threads", type=int, default=2, help="images decoded at once (default 2)")
    p.add_argument("--log-level", default="warning", help="uvicorn's log level (default warning)")
    return p


def _missing_extra(exc):
    return ModuleNotFoundError(f"decaf serve needs {exc.name}: pip install 'decaf[serve]'")


def bind(host, port):
    """A listening socket; the port is known before uvicorn starts (so --port 0 can be printed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args):
    if not 0 <= args.port <= 65535:       # (socket.bind raises OverflowError, not an OSError)
        raise ValueError(f"--port must be 0 to 65535, got {args.port}")
    try:
        import uvicorn
        from ..serve import Engine, Limits, create_app
        import python_multipart  # noqa: F401
    except ModuleNotFoundError as exc:
        raise _missing_extra(exc) from None
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels,
                    max_images=args.max_images, max_queue=args.max_queue, request_timeout=args.timeout,
                    max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, decode_threads=args.decode_threads)
    engine = Engine.load(args.model)
    app = create_app(engine, limits)
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        raise ValueError(f"cannot listen on {args.host}:{args.port} ({exc.strerror})") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"decaf serve: {engine.name} on http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    if not is_loopback(args.host):
        print(f"decaf serve: listening on {args.host}, reachable from the network: anyone who can reach it "
              "can use the model", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, timeout_keep_alive=5, lifespan="on",
                            limit_concurrency=4 * limits.max_queue + 64)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
