"""Dynamic batching: jobs from many requests gathered into minibatches for ONE inference thread.

A job is one image's crops and the blobs wanted from it. The inference thread takes the oldest
job, then waits at most ``wait_ms`` for more jobs that want the same blobs, until the minibatch
holds ``max_batch`` crops; runs it with ``run(outputs, x)``; and hands each job its rows.
Under load the queue is never empty, so minibatches fill without waiting; alone, a request pays
at most ``wait_ms``.

The queue is bounded (in images): a submission that would overflow it is refused whole with
``Overloaded`` and never half-queued. A job whose request gave up (timeout, closed connection)
is cancelled and skipped. An exception in ``run`` fails the jobs of that minibatch, not the
thread.
"""
import collections
import concurrent.futures
import threading
import time


class Overloaded(Exception):
    """The queue is full."""


class Job:
    __slots__ = ("outputs", "x", "future", "queued_at")

    def __init__(self, outputs, x):
        self.outputs, self.x = tuple(outputs), x
        self.future = concurrent.futures.Future()
        self.queued_at = time.perf_counter()


class Batcher:
    def __init__(self, run, max_batch=16, wait_ms=5.0, max_queue=256, name="decaf-inference"):
        self.run, self.max_batch, self.wait, self.max_queue = run, int(max_batch), wait_ms / 1e3, int(max_queue)
        self.name = name
        self._pending = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = None
        self.stats = {"batches": 0, "images": 0, "crops": 0, "failed_batches": 0}

    # ---- the request side ---------------------------------------------------------------
    def start(self):
        with self._cond:
            self._stopping = False
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout=10):
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        for job in self._drain():
            job.future.cancel()

    @property
    def alive(self):
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def queued(self):
        with self._cond:
            return len(self._pending)

    def submit(self, outputs, images):
        """Queue one job per image (each an (n, C, H, W) array); their futures, or Overloaded."""
        jobs = [Job(outputs, x) for x in images]
        with self._cond:
            if self._stopping:
                raise Overloaded("the server is shutting down")
            if len(self._pending) + len(jobs) > self.max_queue:
                raise Overloaded(f"{len(self._pending)} images are waiting (the limit is {self.max_queue})")
            self._pending.extend(jobs)
            self._cond.notify()
        return [job.future for job in jobs]

    # ---- the inference thread -----------------------------------------------------------
    def _drain(self):
        with self._cond:
            jobs = list(self._pending)
            self._pending.clear()
        return jobs

    def _take_batch(self):
        """The next minibatch: the oldest live job and the jobs that want the same blobs."""
        with self._cond:
            while True:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return None
                first = self._pending.popleft()
                if first.future.set_running_or_notify_cancel():
                    break
            batch, crops = [first], first.x.shape[0]
            deadline = time.perf_counter() + self.wait
            while crops < self.max_batch and not self._stopping:
                match = next((j for j in self._pending if j.outputs == first.outputs), None)
                if match is None:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                    continue
                if crops + match.x.shape[0] > self.max_batch:
                    break
                self._pending.remove(match)
                if match.future.set_running_or_notify_cancel():
                    batch.append(match)
                    crops += match.x.shape[0]
            return batch

    def _loop(self):
        import numpy as np
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            started = time.perf_counter()
            try:
                x = batch[0].x if len(batch) == 1 else np.concatenate([j.x for j in batch])
                blobs, timing = self.run(batch[0].outputs, x)
            except Exception as exc:      # a failed minibatch fails its jobs; the thread goes on
                self.stats["failed_batches"] += 1
                for job in batch:
                    job.future.set_exception(exc)
                continue
            size = x.shape[0]
            self.stats["batches"] += 1
            self.stats["images"] += len(batch)
            self.stats["crops"] += size
            start = 0
            for job in batch:
                n = job.x.shape[0]
                rows = {name: value[start:start + n] for name, value in blobs.items()}
                start += n
                info = dict(timing, batch_crops=size, batch_images=len(batch), crops=n,
                            queue_ms=(started - job.queued_at) * 1e3)
                job.future.set_result((rows, info))
