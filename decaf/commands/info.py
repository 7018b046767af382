"""decaf info: the CPU, the kernel variant that runs on it, the BLAS and the threads."""

EXAMPLE = """example:
  decaf info                  # CPU model, ISA flags, kernel path, BLAS, threads
  DECAF_ISA=generic decaf info
  decaf info --json"""


def add_parser(sub):
    import argparse
    p = sub.add_parser("info", help="show the CPU, the kernel path (ISA) chosen for it, the BLAS and threads",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def collect():
    """The facts `decaf info` prints, as a dict."""
    import decaf

    from .. import blas, cpu, kernels, threads

    import os

    kernel_threads, numpy_blas_threads = threads.get_num_threads()
    return {"decaf": decaf.__version__, **cpu.isa_info(), "backend": kernels.get_backend(),
            "blas": blas.blas_info(), "blas_threads": blas.blas_threads(),
            "threads": kernel_threads, "numpy_blas_threads": numpy_blas_threads,
            "openmp_wait": {k: os.environ.get(k) for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")},
            "last_cache_bytes": kernels._compiled.last_cache_bytes() if kernels._compiled is not None else None}


def run(args):
    import json

    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    how = f"forced by DECAF_ISA={info['forced']}" if info["forced"] else "the best this CPU runs"
    if info["backend"] != "compiled":
        how += f"; unused: the {info['backend']} backend runs"
    family = f", family {info['family']} model {info['model']}" if info["family"] else ""
    rows = [("cpu", f"{info['cpu']} ({info['machine']}{family})"),
            ("isa flags", " ".join(info["flags"]) or "(unknown)"),
            ("kernel variants", f"{', '.join(info['supported']) or 'none'} run here "
                                f"(built: {', '.join(info['built']) or 'none'})"),
            ("kernel path", f"{info['isa'] or 'none'} ({how})"),
            ("backend", info["backend"]),
            ("blas", info["blas"]),
            ("blas threads", f"{info['blas_threads']} per decaf thread" if info["blas_threads"] is not None
             else "(decaf's OpenBLAS not loaded)"),
            ("threads", f"{info['threads']} (decaf's kernels); NumPy's BLAS: {info['numpy_blas_threads']}"),
            ("openmp wait", " ".join(f"{k}={v}" for k, v in info["openmp_wait"].items() if v is not None)
             + " (GOMP_SPINCOUNT=0 or OMP_WAIT_POLICY=passive: faster where other processes keep the cores "
               "busy; docs/performance.md)"),
            ("last cache", f"{info['last_cache_bytes'] / 2**20:g} MB (larger 1x1 convolution outputs are stored "
                           "past the caches)" if info["last_cache_bytes"] else "(compiled kernels not built)")]
    for key, value in rows:
        print(f"{key + ':':<17}{value}")
    return 0
