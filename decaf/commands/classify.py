"""decaf classify IMG|DIR|LIST... : the top classes of each image."""
import json
import sys

EXAMPLE = """example:
  decaf classify cat.jpg coffee.png --top 3
  decaf classify photos/ --csv predictions.csv           # every image below photos/
  decaf classify list.txt --oversample --json > predictions.json   # 'PATH [LABEL]' per line
The default model is the pretrained EfficientNet-Lite0, converted on first use into the cache.
Python: decaf.classify.classify(net, paths, top=5) (docs/python-api.md)."""


def add_parser(sub):
    import argparse
    p = sub.add_parser("classify", help="classify images with a pretrained net", epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMG|DIR|LIST",
                   help="image files (any format Pillow reads), directories (every image below) or list files "
                        "(.txt/.lst: one image path per line)")
    p.add_argument("--model", default=None, help="pretrained name or a .decaf file (default: efficientnet_lite0)")
    p.add_argument("--top", type=int, default=5, help="how many classes to show per image (default 5)")
    p.add_argument("--oversample", action="store_true", help="average 10 crops (corners + centre, mirrored)")
    p.add_argument("--batch", type=int, default=10,
                   help="crops per forward pass, whole images per batch (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--csv", metavar="OUT.csv",
                   help="also write a CSV: path, error, then index/name/prob of each of the top classes")
    return p


def write_csv(results, path, top):
    import csv
    columns = ["path", "error"] + [f"{field}_{r}" for r in range(1, top + 1) for field in ("index", "name", "prob")]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in results:
            row = [r["path"], r.get("error", "")]
            for t in r.get("top", []):
                row += [t["index"], t["name"], f"{t['prob']:.6f}"]
            writer.writerow(row + [""] * (len(columns) - len(row)))


def run(args):
    import os

    from ..classify import classify, expand_sources
    from ..io import load_model

    if args.top < 1:
        raise ValueError("--top must be at least 1")
    if args.csv and not os.path.isdir(os.path.dirname(os.path.abspath(args.csv))):
        raise FileNotFoundError(f"{os.path.dirname(os.path.abspath(args.csv))}: the output folder does not exist")
    images = expand_sources(args.images)
    if not images:
        raise ValueError(f"no images found in {', '.join(args.images)}")
    net = load_model(args.model)
    results = classify(net, images, top=args.top, oversample=args.oversample, batch_size=args.batch,
                       on_error=lambda path, msg: print(f"skipped: {msg}", file=sys.stderr))
    if args.csv:
        write_csv(results, args.csv, args.top)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            if "error" in r:
                continue
            print(r["path"])
            for t in r["top"]:
                print(f"  {t['prob']:7.2%}  {t['index']:>4}  {t['name']}")
    return 1 if all("error" in r for r in results) else 0
