"""decaf evaluate MODEL DATA : top-1/top-k accuracy, per-class accuracy and a confusion matrix."""
import sys

EXAMPLE = """examples:
  decaf evaluate caffenet.decaf val/                       # val/<class name>/*.jpg
  decaf evaluate efficientnet_lite0 val.txt --top 5 --json result.json --csv predictions.csv
  decaf evaluate model.decaf val/ --confusion confusion.png --oversample

DATA is a folder with one subfolder per class, named like the net's classes (case, underscores
and WordNet synonyms do not matter: 'tabby', 'tabby_cat' and 'tabby, tabby cat' are one class;
a number is a class index), or a list file (.txt/.lst: 'PATH INDEX' per line). Unreadable images
are skipped and listed; the rest are scored. The confusion matrix has a row per class present in
the data, columns the same classes and 'other'. See decaf/evaluate.py."""


def add_parser(sub):
    import argparse
    p = sub.add_parser("evaluate", help="accuracy of a classifier on labelled images (top-k, per class, confusion)",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a .decaf file or a pretrained name")
    p.add_argument("data", metavar="DATA", help="a folder of class subfolders, or a list file")
    p.add_argument("--top", type=int, default=5, help="k of the top-k accuracy (default 5)")
    p.add_argument("--batch", type=int, default=10, help="rows per forward pass (default 10)")
    p.add_argument("--oversample", action="store_true", help="average 10 crops per image")
    p.add_argument("--json", metavar="OUT.json", help="write the whole result (with the confusion matrix)")
    p.add_argument("--csv", metavar="OUT.csv", help="write one row per scored image")
    p.add_argument("--confusion", metavar="OUT.png", help="draw the confusion matrix (matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


CSV_COLUMNS = ("path", "label", "label_name", "predicted", "predicted_name", "prob", "top1_correct",
               "topk_correct", "top_k")


def run(args):
    import csv
    import json
    import os

    from ..evaluate import evaluate, plot_confusion
    from ..io import load_model

    if args.top < 1 or args.batch < 1:
        raise ValueError("--top and --batch must be at least 1")
    for out in (args.json, args.csv, args.confusion):
        if out and not os.path.isdir(os.path.dirname(os.path.abspath(out))):
            raise FileNotFoundError(f"{os.path.dirname(os.path.abspath(out))}: the output folder does not exist")
    net = load_model(args.model)
    labels = (getattr(net, "meta", None) or {}).get("labels")
    rows = []

    def skipped(path, message):
        from tqdm import tqdm
        tqdm.write(f"skipped: {message}" if path in message else f"skipped: {path}: {message}", file=sys.stderr)

    def predicted(row):
        best = row["top"][0]
        rows.append({"path": row["path"], "label": row["label"], "label_name": row["label_name"],
                     "predicted": best, "predicted_name": labels[best] if labels and best < len(labels) else best,
                     "prob": f"{row['probs'][0]:.6f}", "top1_correct": int(best == row["label"]),
                     "topk_correct": int(row["label"] in row["top"]), "top_k": " ".join(map(str, row["top"]))})

    result = evaluate(net, args.data, top_k=args.top, batch_size=args.batch, oversample=args.oversample,
                      progress=not args.quiet, on_error=skipped, on_prediction=predicted)
    result.update(model=str(args.model or "efficientnet_lite0"), data=str(args.data), oversample=args.oversample)
    if args.json:
        from ..io.blobfile import _write_atomically
        text = json.dumps(result, indent=2).encode()
        _write_atomically(args.json, lambda stream: stream.write(text))
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    if args.confusion:
        plot_confusion(result, args.confusion)
    print_result(result)
    return 0 if result["scored"] else 1


def print_result(result):
    n, k = result["scored"], result["k"]
    print(f"{result['data']}: {n} images scored, {len(result['skipped'])} skipped, "
          f"{len(result['per_class'])} classes")
    if not n:
        return
    print(f"top-1 {result['top1']:.2%}   top-{k} {result['topk']:.2%}   mean per-class top-1 "
          f"{result['mean_class_top1']:.2%}")
    width = min(40, max(len(str(c["name"]).split(",")[0]) for c in result["per_class"]))
    print(f"  {'class':<{width}}  {'images':>6}  {'top-1':>7}  {f'top-{k}':>7}")
    for c in result["per_class"]:
        name = str(c["name"]).split(",")[0][:width]
        if not c["images"]:
            print(f"  {name:<{width}}  {0:>6}  {'-':>7}  {'-':>7}")
            continue
        print(f"  {name:<{width}}  {c['images']:>6}  {c['top1']:>7.1%}  {c['topk']:>7.1%}")
    sys.stdout.flush()
