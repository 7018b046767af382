"""One thread at a time per Net: concurrent use is refused with a clear error instead of mixing results.

A Net keeps every activation and gradient in its own blobs, so two threads running one Net
overwrite each other's batches and both get wrong answers, silently.  ``Net.forward`` and
``Net.backward`` therefore hold the net for the length of the call; a second thread that
arrives meanwhile gets a RuntimeError at once (no waiting: waiting would hide the design
error and serialise the callers).  The same thread may re-enter (a layer or a hook calling
forward inside forward).  Use one Net per thread, or put your own lock around the calls.
"""
import contextlib
import threading
import weakref

_HOLDS = weakref.WeakKeyDictionary()      # net -> its RLock (kept off the Net: nets stay copyable)
_HOLDS_GUARD = threading.Lock()


def _lock_of(net):
    with _HOLDS_GUARD:
        lock = _HOLDS.get(net)
        if lock is None:
            lock = _HOLDS[net] = threading.RLock()
        return lock


@contextlib.contextmanager
def exclusive(net, what):
    """Hold ``net`` for one call named ``what`` ("forward"), or raise RuntimeError if another
    thread holds it."""
    lock = _lock_of(net)
    if not lock.acquire(blocking=False):
        raise RuntimeError(
            f"net {net.name!r}: {what} called from thread {threading.current_thread().name!r} while "
            f"another thread is running this net; a Net keeps its activations in its own blobs, so "
            f"concurrent calls would corrupt each other's results. Use one Net per thread (build "
            f"another, e.g. decaf.load again) or serialise the calls with a lock")
    try:
        yield
    finally:
        lock.release()
