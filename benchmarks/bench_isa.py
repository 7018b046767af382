"""CaffeNet's forward pass on each kernel variant (ISA) this CPU runs, one after the other.

    python benchmarks/bench_isa.py [--batch 10] [--rounds 5] [--threads 2] [--json OUT] [--baseline DIR]

Each variant runs in its own process (DECAF_ISA=generic / avx2 / avx512), with the same random
weights and input; each reports its best of `rounds` forwards after one warm-up. The variants take
turns round by round (one forward each per round), so a drift of a shared machine moves them alike.
Prints images per second per variant, its ratio to the generic one, and the CPU model.
--baseline DIR also runs the decaf of another checkout (e.g. one built with -march=native, before
the dispatch), as it chooses.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# runs in each variant's process: build the net, then one forward per line read from stdin
WORKER = """
import sys, time
import numpy as np
import decaf
from decaf.models import get_spec
decaf.set_num_threads(int(sys.argv[2]))
net = decaf.Net(get_spec("caffenet"), seed=0)
x = np.random.default_rng(0).standard_normal((int(sys.argv[1]), 3, 227, 227)).astype(np.float32)
net.forward(data=x)
try:
    from decaf.cpu import get_isa
    print(get_isa(), flush=True)
except ImportError:   # a checkout from before the dispatch
    print("baseline", flush=True)
for _ in sys.stdin:
    t = time.perf_counter()
    net.forward(data=x)
    print(time.perf_counter() - t, flush=True)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--baseline", help="another checkout of decaf to run too, with its own build")
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from decaf import blas, cpu

    workers = {}
    runs = [(isa, ROOT, isa) for isa in cpu.supported_isas()]
    if args.baseline:
        runs.append(("baseline", os.path.abspath(args.baseline), ""))
    for name, root, isa in runs:
        env = dict(os.environ, DECAF_ISA=isa, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(args.batch), str(args.threads)], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root)
        workers[name] = proc
        said = proc.stdout.readline().strip()                # built, warmed up, on the asked variant
        assert said == isa or (name == "baseline" and said), (name, said)
    best = {isa: float("inf") for isa in workers}
    for _ in range(args.rounds):
        for isa, proc in workers.items():
            time.sleep(0.02)                                # no team of the previous one still spinning
            proc.stdin.write("go\n")
            proc.stdin.flush()
            best[isa] = min(best[isa], float(proc.stdout.readline()))
    for proc in workers.values():
        proc.stdin.close()
        proc.wait()
    result = {"cpu": cpu.cpu_model(), "flags": cpu.cpu_flags(), "batch": args.batch, "threads": args.threads,
              "rounds": args.rounds, "blas": blas.blas_info(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "img_per_s": {isa: args.batch / t for isa, t in best.items()}}
    print(f"CaffeNet forward, batch {args.batch}, {args.threads} threads, best of {args.rounds}; "
          f"CPU: {result['cpu']} ({' '.join(result['flags'])}); {result['date']}")
    generic = result["img_per_s"].get("generic")
    for isa, rate in result["img_per_s"].items():
        ratio = f"  ({rate / generic:.2f}x generic)" if generic else ""
        print(f"  {isa:<9}{rate:8.1f} img/s{ratio}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
