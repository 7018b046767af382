"""decaf classify IMG... : the top classes of each image."""
import json
import sys

EXAMPLE = """example:
  decaf classify cat.jpg coffee.png --top 3
  decaf classify photos/*.jpg --oversample --json > predictions.json
The default model is the pretrained EfficientNet-Lite0, converted on first use into the cache."""


def add_parser(sub):
    import argparse
    p = sub.add_parser("classify", help="classify images with a pretrained net", epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMG", help="image files (any format Pillow reads)")
    p.add_argument("--model", default=None, help="pretrained name or a .decaf file (default: efficientnet_lite0)")
    p.add_argument("--top", type=int, default=5, help="how many classes to show per image (default 5)")
    p.add_argument("--oversample", action="store_true", help="average 10 crops (corners + centre, mirrored)")
    p.add_argument("--batch", type=int, default=10,
                   help="crops per forward pass, whole images per batch (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def run(args):
    from ..classify import classify
    from ..pretrained import load_model

    if args.top < 1:
        raise ValueError("--top must be at least 1")
    net = load_model(args.model)
    results = classify(net, args.images, top=args.top, oversample=args.oversample, batch_size=args.batch,
                       on_error=lambda path, msg: print(f"skipped: {msg}", file=sys.stderr))
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
