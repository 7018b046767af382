"""Extraction throughput of ``decaf.features.extract`` at several batch sizes.

    python examples/extract_throughput.py /tmp/digits --images 256 --batches 1 8 16 32 64 --json out.json

Runs the whole path (decode + resize + forward) on the first ``--images`` images of
the folder, once per batch size after one warm-up batch, and prints images/s with the
share of time spent in the forward pass. The machine's load average is printed too:
other processes on the same cores slow every number down.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))   # run from a checkout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--model", default=None, help="pretrained name or .decaf file")
    parser.add_argument("--zoo", help="a zoo spec with random weights instead (timing only), e.g. caffenet")
    parser.add_argument("--blob", action="append")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    import decaf
    from decaf.features import collect_images, extract
    from decaf.pretrained import load_model

    if args.zoo:
        from decaf import Net
        from decaf.models import get_spec
        net = Net(get_spec(args.zoo, with_loss=False))
        size = net.input_shapes["data"][1]
        net.meta = {"preprocess": {"resize_shorter": 256 if size > 200 else size, "crop": size}}
    else:
        net = load_model(args.model)
    items, _ = collect_images(args.folder)
    items = items[:args.images]
    rows = []
    for batch in args.batches:
        extract(net, items[:batch], blobs=args.blob, batch_size=batch)      # warm-up: buffers for this size
        stats = {}
        load_before = os.getloadavg()[0]
        t = time.perf_counter()
        extract(net, items, blobs=args.blob, batch_size=batch, stats=stats)
        seconds = time.perf_counter() - t
        row = {"batch": batch, "images": len(items), "seconds": round(seconds, 2),
               "images_per_second": round(len(items) / seconds, 1),
               "forward_share": round(stats["forward_seconds"] / seconds, 3),
               "load_average": round(max(load_before, os.getloadavg()[0]), 2)}
        rows.append(row)
        print(f"batch {batch:>3}: {row['images_per_second']:6.1f} images/s  ({row['seconds']:.1f} s for "
              f"{len(items)}, forward {100 * row['forward_share']:.0f}%, load average {row['load_average']})",
              flush=True)
    result = {"model": args.zoo or args.model or "efficientnet_lite0", "blobs": args.blob, "threads": decaf.get_num_threads(),
              "cpu_count": os.cpu_count(), "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
