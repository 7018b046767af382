"""What the kernel benchmarks share: the CPU they ran on, and a repeat-until timer.

Imported by the bench_*.py scripts of this folder (run as scripts, so this folder is on sys.path)."""
import platform
import subprocess
import time


def cpu_name():
    """'model name (family F, model M)' from lscpu."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    get = lambda key: fields.get(key, "?").strip()   # noqa: E731
    return f"{get('Model name')} (family {get('CPU family')}, model {get('Model')})"


def best_time(fn, min_time):
    """Seconds per call of fn, from calls repeated for at least min_time."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        t = time.perf_counter() - t0
        if t >= min_time:
            return t / n


def time_forwards(net, batch, forwards, warmup, gap=0.02):
    """(best, median) seconds of `forwards` forward passes of a decaf net on random inputs of
    `batch` examples, after `warmup` untimed ones, the passes `gap` seconds apart (as
    bench_models.py's rounds are)."""
    import numpy as np
    name, shape = next(iter(net.input_shapes.items()))
    x = np.random.default_rng(0).standard_normal((batch,) + tuple(shape)).astype(np.float32)
    for _ in range(warmup):
        net.forward(**{name: x})
    times = []
    for _ in range(forwards):
        time.sleep(gap)
        t = time.perf_counter()
        net.forward(**{name: x})
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))
