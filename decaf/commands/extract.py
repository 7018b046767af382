"""decaf extract SRC... -o OUT.npz|OUT.zarr : DeCAF features (any blobs) for many images, resumable, on a Dask
cluster with --workers / --scheduler."""
import sys

EXAMPLE = """examples:
  decaf extract photos/ --blob pool -o feats.npz              # labels = subfolder names of photos/
  decaf extract list.txt --blob fc6 --blob relu7 --model caffenet.decaf --batch 50 -o decaf67.npz
  decaf extract a.jpg b.png --json -o two.npz
  decaf extract photos/ -o feats.zarr --workers 2             # a Zarr store, 2 local worker processes
  decaf extract /shared/imgs.txt -o /shared/f.zarr --model /shared/caffenet.decaf --scheduler tcp://head:8786

SRC is a directory (every image below it; the first subfolder is the label), a list file
(.txt/.lst: 'PATH [LABEL]' per line) or image files. Unreadable images are skipped and listed.
The work goes in shards to OUT.npz.parts/; run the same command again after a crash or
Ctrl-C and it resumes. OUT.npz holds one float32 array per blob (N x D) plus 'paths',
'labels', 'skipped', 'skipped_errors', 'root' and 'info'. OUT.zarr (or an fsspec URL) is a
Zarr store written shard by shard and read lazily (docs/scale.md). CaffeNet: fc6/fc7 are before the
ReLU, relu6/relu7 after it, pool5 is DeCAF5 (docs/features.md)."""


def add_parser(sub):
    import argparse
    p = sub.add_parser("extract", help="extract features (net blobs) for many images into an .npz",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SRC", help="directories, list files or image files")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="the feature file to write: OUT.npz, or a store OUT.zarr / URL (s3://..., file://...)")
    p.add_argument("--blob", action="append", metavar="NAME",
                   help="a blob to extract (repeat for several; default: the input of the last "
                        "fully connected layer, e.g. 'pool' for EfficientNet-Lite0)")
    p.add_argument("--model", default=None, help="pretrained name or a .decaf file (default: efficientnet_lite0)")
    p.add_argument("--batch", type=int, default=32,
                   help="rows per forward pass: images, or crops with --oversample (whole images per batch; "
                        "default 32)")
    p.add_argument("--shard", type=int, default=256, help="images per resumable shard (default 256)")
    p.add_argument("--oversample", action="store_true", help="average the features of 10 crops per image")
    p.add_argument("--no-flatten", action="store_true", help="keep each blob's shape (N, C, H, W)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    from ..distributed import add_arguments as add_cluster_arguments   # --workers / --scheduler
    add_cluster_arguments(p)
    return p


def run(args):
    import json
    import os

    from ..features import extract, load_features
    from ..io import load_model

    if args.batch < 1 or args.shard < 1:
        raise ValueError("--batch and --shard must be at least 1")
    from ..featstore import is_store
    if "://" not in args.output:
        out_dir = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(out_dir):
            raise FileNotFoundError(f"{out_dir}: the output folder does not exist")
    net = load_model(args.model)
    stats = {}

    def skipped(path, message):
        from tqdm import tqdm
        tqdm.write(f"skipped: {path}: {message}", file=sys.stderr)   # above the progress bar

    from ..distributed import cluster_extract, wants_cluster
    from ..features import OutputLocked, ShardError
    run_extract = cluster_extract(args) if wants_cluster(args) else extract   # --workers / --scheduler
    failures = (ShardError,)
    if wants_cluster(args):
        from distributed import KilledWorker      # a shard whose workers all died (allowed-failures)
        failures += (KilledWorker,)
    try:
        feats = run_extract(net, args.sources, blobs=args.blob, batch_size=args.batch,
                            oversample=args.oversample, flatten=not args.no_flatten, out=args.output,
                            shard_size=args.shard, progress=not args.quiet, on_error=skipped, stats=stats)
    except OutputLocked as exc:
        print(f"decaf extract: error: {exc}", file=sys.stderr)
        return 1
    except failures as exc:
        print(f"decaf extract: error: {type(exc).__name__}: {exc}; the finished shards are kept: run the same "
              "command again to resume", file=sys.stderr)
        return 1
    if not is_store(args.output):
        feats = load_features(args.output)       # what was written, as a reader sees it
    info = feats["info"]
    blobs = {b: {"shape": list(feats[b].shape[1:]), "relu": info["relu"].get(b, "")} for b in info["blobs"]}
    computed = stats["computed_images"]
    # no rate when nothing was extracted: "1 images ... 2.2 images/s" for one unreadable file says nothing
    rate = computed / stats["seconds"] if computed and stats["extracted"] and stats["seconds"] > 0 else None
    summary = {"output": args.output, "images": stats["images"], "extracted": stats["extracted"],
               "skipped": [{"path": p, "error": e} for p, e in zip(feats["skipped"], feats["skipped_errors"])],
               "blobs": blobs, "batch_size": args.batch, "resumed_shards": stats["resumed_shards"],
               "shards": stats["shards"], "seconds": round(stats["seconds"], 3),
               "images_per_second": round(rate, 2) if rate else None,
               "forward_seconds": round(stats["forward_seconds"], 3),
               "preprocess_seconds": round(stats["preprocess_seconds"], 3)}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        shapes = ", ".join(f"{b} {'x'.join(map(str, v['shape']))}" + (f" ({v['relu']})" if v["relu"] else "")
                           for b, v in blobs.items())
        print(f"wrote {args.output}: {stats['extracted']} images, {shapes}; "
              f"{len(summary['skipped'])} skipped")
        if stats["resumed_shards"]:
            print(f"resumed: {stats['resumed_shards']} of {stats['shards']} shards were already done")
        if stats.get("cluster_start_seconds"):
            print(f"dask: {len(stats['worker_pids'])} worker processes computed {stats['computed_shards']} shards; "
                  f"starting the cluster took {stats['cluster_start_seconds']:.1f} s of the time below")
        if rate:
            print(f"{computed} images in {stats['seconds']:.1f} s: {rate:.1f} images/s at batch {args.batch} "
                  f"(forward {stats['forward_seconds']:.1f} s, decode+resize {stats['preprocess_seconds']:.1f} s)")
    return 0 if stats["extracted"] else 1
