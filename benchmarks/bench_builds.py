"""Two builds of decaf (two checkouts, each with its extension built) on the same nets, their processes
taking turns: what a change gave, measured in one window of a shared machine.

    flock /tmp/decaf-bench.lock python benchmarks/bench_builds.py --old ../old-checkout --new . \\
        [--rounds 3] [--threads 2] [--json OUT] NET.decaf:BATCH:FORWARDS ...

A checkout is made with e.g. `git worktree add ../old-checkout <commit>` and built there with
`python setup.py build_ext --inplace`. Each round runs one process per build (old first), each
loading every net given (a .decaf file, e.g. from `decaf convert`), running 2 forward passes to
warm up, then FORWARDS timed passes 20 ms apart at BATCH (random inputs). Per net the figure is the
lowest of the rounds' medians (and of their best passes); ratio = old / new (> 1: the new build is
faster). Prints a table, the geometric mean of the ratios and the CPU.
"""
import argparse
import datetime
import json
import math
import os
import subprocess
import sys

from bench_common import cpu_name, time_forwards  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(specs, threads):
    """In the child: {spec: (best ms, median ms)} for each NET:BATCH:FORWARDS."""
    import decaf
    decaf.set_num_threads(threads)
    out = {}
    for spec in specs:
        path, batch, forwards = parse_spec(spec)
        best, median = time_forwards(decaf.load(path), batch, forwards, warmup=2)
        out[spec] = (best * 1e3, median * 1e3)
    return out


def parse_spec(spec):
    try:
        path, batch, forwards = spec.rsplit(":", 2)
        return path, int(batch), int(forwards)
    except ValueError:
        raise SystemExit(f"bench_builds: {spec!r} is not NET.decaf:BATCH:FORWARDS") from None


def commit(checkout):
    """The checkout's commit (its path when it is not a git checkout)."""
    done = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or os.path.abspath(checkout)


def run_build(checkout, specs, threads):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--threads", str(threads), *specs]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"bench_builds: the build at {checkout} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+", help="NET.decaf:BATCH:FORWARDS")
    parser.add_argument("--old", help="the checkout to compare against")
    parser.add_argument("--new", default=ROOT, help="the checkout measured (default: this one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results here (default: benchmarks/results_builds_<date>.json)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.specs, args.threads)))
        return
    if not args.old:
        parser.error("--old: the checkout to compare against is required")
    for spec in args.specs:
        if not os.path.isfile(parse_spec(spec)[0]):
            parser.error(f"{spec}: no such net file")
    runs = {"old": [], "new": []}
    for _ in range(args.rounds):
        for which in ("old", "new"):
            runs[which].append(run_build(getattr(args, which), args.specs, args.threads))
    print(f"CPU: {cpu_name()}; {args.threads} threads; {args.rounds} rounds, processes alternating")
    print("| net:batch | old median (best) ms | new median (best) ms | old / new |")
    print("|---|---|---|---|")
    results, ratios = [], []
    for spec in args.specs:
        path, batch, _ = parse_spec(spec)
        old = min(r[spec][1] for r in runs["old"]), min(r[spec][0] for r in runs["old"])
        new = min(r[spec][1] for r in runs["new"]), min(r[spec][0] for r in runs["new"])
        ratios.append(old[0] / new[0])
        results.append({"net": os.path.basename(path), "batch": batch, "old_median_ms": old[0], "old_best_ms": old[1],
                        "new_median_ms": new[0], "new_best_ms": new[1], "ratio": old[0] / new[0]})
        print(f"| {os.path.basename(path)}:{batch} | {old[0]:.2f} ({old[1]:.2f}) | {new[0]:.2f} ({new[1]:.2f}) | "
              f"{old[0] / new[0]:.2f} |")
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"geometric mean of old / new: {geomean:.3f}")
    out = args.json or os.path.join(ROOT, "benchmarks", f"results_builds_{datetime.date.today().isoformat()}.json")
    with open(out, "w") as f:
        json.dump({"cpu": cpu_name(), "threads": args.threads, "rounds": args.rounds,
                   "old": commit(args.old), "new": commit(args.new), "geomean": geomean,
                   "note": "per net the lowest of the rounds' medians (and best passes); ratio old / new",
                   "results": results}, f, indent=1)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
