"""decaf profile MODEL: per-layer time, MACs and bytes, and the roll-up by layer type (the paper's Figure 3).

Times every layer's forward (and with --backward its backward) on random inputs, as the median over
--iters iterations after --warmup discarded ones, next to the whole net timed separately. Prints a
table; --json, --csv and --plot write the same result for machines and for the eye.
"""

EXAMPLE = """examples:
  decaf profile caffenet --batch 10
  decaf profile caffenet --batch 50 --iters 5 --plot caffenet_b50.png --json caffenet_b50.json
  decaf profile lenet --backward --threads 1 --csv lenet.csv
  decaf profile net.decaf --batch 1 --json -      # a converted or trained net; JSON to stdout
MODEL is a zoo name (random weights: the time does not depend on their values) or a .decaf file.
Each layer's time is the median of its own forward calls inside full passes, so the per-layer times
add up to a pass; the header compares their sum with the whole net.forward timed on its own.
MACs are per image; times, bytes and GFLOP/s are per batch. See docs/profiling.md."""


def add_parser(sub):
    import argparse
    p = sub.add_parser("profile", help="per-layer timing, MACs and bytes, by layer type (Figure 3)",
                       description=__doc__.split("\n\n")[0], epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a zoo model (caffenet, alexnet, lenet, efficientnet_lite0) "
                                                  "or a .decaf file")
    p.add_argument("--batch", type=int, default=10, help="images per pass (default 10)")
    p.add_argument("--iters", type=int, default=10, help="timed iterations; times are medians (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="discarded iterations before timing (default 2)")
    p.add_argument("--backward", action="store_true",
                   help="time the backward pass too (in the train phase unless --phase says otherwise)")
    p.add_argument("--phase", choices=("test", "train"), default=None,
                   help="net phase (default: train with --backward, else test)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for decaf's kernels and the BLAS (default: as set, e.g. by DECAF_NUM_THREADS)")
    p.add_argument("--json", metavar="F", default=None, help="write the result as JSON to F ('-' for stdout)")
    p.add_argument("--csv", metavar="F", default=None, help="write one row per layer as CSV to F ('-' for stdout)")
    p.add_argument("--plot", metavar="F.png", default=None,
                   help="write the picture: time per layer and a pie by layer type")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def load_model(model, seed=0):
    """(Net, notes) for a MODEL argument (decaf.io.load_model with zoo specs allowed)."""
    from ..io import load_model as load_any
    from ..models import ZOO
    from ..pretrained import PRETRAINED
    net = load_any(model, zoo=True, seed=seed)
    if model in ZOO and model not in PRETRAINED:
        return net, [f"zoo spec {model!r} with random weights (seed {seed}); "
                     "timing does not depend on the weights' values"]
    return net, [f"weights from {model}"]


def run(args):
    import sys

    from ..profile import profile
    for flag, value, least in (("--batch", args.batch, 1), ("--iters", args.iters, 1),
                               ("--warmup", args.warmup, 0), ("--threads", args.threads, 1)):
        if value is not None and value < least:
            raise ValueError(f"{flag} must be at least {least}, got {value}")
    net, notes = load_model(args.model, args.seed)
    result = profile(net, batch=args.batch, iters=args.iters, warmup=args.warmup, backward=args.backward,
                     threads=args.threads, progress=not args.no_progress, phase=args.phase, seed=args.seed,
                     name=args.model if args.model.endswith(".decaf") else None, notes=notes)
    to_stdout = "-" in (args.json, args.csv)
    if not to_stdout:
        print(result.table())
    if args.json:
        result.to_json(args.json)
    if args.csv:
        result.to_csv(args.csv)
    if args.plot:
        result.plot(args.plot)
    written = [f for f in (args.json, args.csv, args.plot) if f and f != "-"]
    if written:
        print("wrote " + ", ".join(written), file=sys.stderr if to_stdout else sys.stdout)
    return 0
