"""``decaf serve``: the web demo and an inference server for one decaf net.

    from decaf.serve import Engine, Limits, create_app
    app = create_app(Engine.load(), Limits(max_images=8))    # any ASGI server runs it; decaf serve uses uvicorn

Modules, one job each: ``engine`` (the only door into the rest of decaf), ``batcher`` (dynamic
batching on one inference thread), ``uploads`` (bodies, multipart and image decoding, in memory),
``limits`` (the limits and the JSON errors), ``render`` (the teaching view's PNG grids),
``openapi`` (the API description), ``app`` (the routes), ``static/`` (the page).
Needs the ``serve`` extra: ``pip install 'decaf[serve]'``.
"""
from .engine import Engine, load_net  # noqa: F401
from .limits import Limits  # noqa: F401


def create_app(engine, limits=None):
    from .app import create_app as _create
    return _create(engine, limits)
