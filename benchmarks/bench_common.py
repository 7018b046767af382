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
