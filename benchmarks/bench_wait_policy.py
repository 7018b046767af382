"""How long OpenMP's threads should spin between parallel loops: decaf's forward pass under several
GOMP_SPINCOUNT values, on a quiet machine and with one core kept busy by another process.

    flock /tmp/decaf-bench.lock python benchmarks/bench_wait_policy.py [--spins 0 1000 10000]
        [--models mobilenet_v2:1 resnet50:1 caffenet:1 mobilenet_v2:16] [--forwards 20] [--rounds 2]
        [--threads 2] [--json OUT]

GOMP_SPINCOUNT is read once, when the OpenMP runtime starts, so every (setting, model) runs in its
own process: it builds the zoo net (random weights: the time does not depend on them), runs 3
forward passes to warm up, then --forwards timed passes 20 ms apart (as bench_models.py's rounds
are). The busy core is a Python busy loop in another process, started before and stopped after
each measurement (never left running). The settings take turns within each round and condition,
so a drift of the shared machine moves them alike. Prints the median and best pass per setting
and their ratio to the first setting's, and the CPU.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time

from bench_common import cpu_name, time_forwards  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSY_LOOP = "import time\nend = time.time() + 600\nwhile time.time() < end:\n    pass\n"


def worker(model, batch, forwards, threads):
    """Runs in the child process: (best, median) seconds of `forwards` passes."""
    sys.path.insert(0, ROOT)
    import decaf
    from decaf.models import get_spec
    decaf.set_num_threads(threads)
    return time_forwards(decaf.Net(get_spec(model)), batch, forwards, warmup=3)


def measure(spin, model, batch, args):
    env = dict(os.environ, GOMP_SPINCOUNT=str(spin))
    env.pop("OMP_WAIT_POLICY", None)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"{model}:{batch}",
           "--forwards", str(args.forwards), "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=True).stdout
    best, median = json.loads(out.strip().splitlines()[-1])
    return best, median


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spins", type=int, nargs="+", default=[10000, 1000, 0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2:1", "resnet50:1", "caffenet:1",
                                                         "mobilenet_v2:16"])
    parser.add_argument("--forwards", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results here (default: "
                                       "benchmarks/results_wait_policy_<date>.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        model, batch = args.worker.split(":")
        print(json.dumps(worker(model, int(batch), args.forwards, args.threads)))
        return

    print(f"CPU: {cpu_name()}; {args.threads} threads; GOMP_SPINCOUNT {args.spins}")
    results = []
    for condition in ("quiet", "one busy core"):
        for rnd in range(args.rounds):
            for spec in args.models:
                model, batch = spec.split(":")
                for spin in args.spins:
                    busy = None
                    if condition != "quiet":
                        busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
                        time.sleep(0.5)
                    try:
                        best, median = measure(spin, model, int(batch), args)
                    finally:
                        if busy is not None:
                            busy.kill()
                            busy.wait()
                    results.append({"condition": condition, "round": rnd, "model": model, "batch": int(batch),
                                    "spin": spin, "best_ms": best * 1e3, "median_ms": median * 1e3})
                    print(f"{condition:13s} round {rnd} {model}:{batch} GOMP_SPINCOUNT={spin:<6d} "
                          f"best {best * 1e3:8.2f} ms  median {median * 1e3:8.2f} ms", flush=True)
    print()
    print("| condition | model:batch | " + " | ".join(f"spin {s}: median (best) ms" for s in args.spins) +
          f" | median / spin {args.spins[0]}'s |")
    print("|---|---|" + "---|" * len(args.spins) + "---|")
    for condition in ("quiet", "one busy core"):
        for spec in args.models:
            model, batch = spec.split(":")
            cells, medians = [], []
            for spin in args.spins:
                rows = [r for r in results if r["condition"] == condition and r["model"] == model
                        and r["batch"] == int(batch) and r["spin"] == spin]
                med = min(r["median_ms"] for r in rows)
                medians.append(med)
                cells.append(f"{med:.2f} ({min(r['best_ms'] for r in rows):.2f})")
            ratios = " / ".join(f"{m / medians[0]:.2f}" for m in medians)
            print(f"| {condition} | {spec} | " + " | ".join(cells) + f" | {ratios} |")
    out = args.json or os.path.join(ROOT, "benchmarks",
                                    f"results_wait_policy_{datetime.date.today().isoformat()}.json")
    with open(out, "w") as f:
        json.dump({"cpu": cpu_name(), "threads": args.threads, "forwards": args.forwards, "rounds": args.rounds,
                   "note": "median_ms per (condition, model, spin): the lowest of the rounds' medians",
                   "results": results}, f, indent=1)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
