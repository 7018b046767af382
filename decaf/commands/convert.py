"""decaf convert SRC -o OUT.decaf : weights from PyTorch, ONNX or Caffe files into decaf's format."""
import os

EXAMPLE = """examples:
  decaf convert model.pth --arch efficientnet_lite0 -o lite0.decaf      # PyTorch (zip or legacy), read without torch
  decaf convert model.onnx -o model.decaf                                 # ONNX
  decaf convert bvlc.caffemodel --prototxt deploy.prototxt -o caffenet.decaf   # Caffe (V1 or V2)
  decaf convert model.onnx --fold-bn -o model.decaf                       # fold BatchNorm into convs"""


def add_parser(sub):
    import argparse
    p = sub.add_parser("convert", help="convert PyTorch / ONNX / Caffe weights into a .decaf file",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="a .pth/.pt, .onnx or .caffemodel file")
    p.add_argument("-o", "--output", required=True, help="the .decaf file to write")
    p.add_argument("--prototxt", help="the Caffe net definition (with a .caffemodel)")
    p.add_argument("--arch", help="architecture of a PyTorch checkpoint (e.g. efficientnet_lite0)")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm layers into the preceding convolutions")
    p.add_argument("--labels", help="a text file with one class name per line")
    p.add_argument("--preprocess", help="a JSON file with the preprocessing recipe (see decaf/image.py)")
    return p


def convert(src, arch=None, prototxt=None):
    """(spec, arrays, format name) from a source file, by its extension."""
    ext = os.path.splitext(src)[1].lower()
    if not os.path.exists(src):
        raise FileNotFoundError(f"{src}: no such file")
    if ext in (".pth", ".pt", ".ckpt", ".bin"):
        if not arch:
            from ..io.torch_convert import ARCHS
            raise ValueError(f"a PyTorch checkpoint holds no architecture: pass --arch (one of {sorted(ARCHS)})")
        from ..io.torch_convert import torch_to_net
        spec, arrays = torch_to_net(src, arch)
        return spec, arrays, "torch"
    if ext == ".onnx":
        from ..io.onnx_convert import onnx_to_net
        spec, arrays = onnx_to_net(src)
        return spec, arrays, "onnx"
    if ext in (".caffemodel", ".prototxt"):
        from ..io.caffe import caffe_to_net
        if ext == ".prototxt":
            spec, arrays, _ = caffe_to_net(src, None)
        else:
            if not prototxt:
                raise ValueError("a .caffemodel needs its net definition: pass --prototxt deploy.prototxt")
            spec, arrays, _ = caffe_to_net(prototxt, src)
        return spec, arrays, "caffe"
    raise ValueError(f"{src}: unknown source format {ext!r} (expected .pth/.pt, .onnx or .caffemodel)")


def run(args):
    import json

    from ..io.netfile import save, sha256_of
    from ..net import Net

    spec, arrays, fmt = convert(args.src, args.arch, args.prototxt)
    if args.fold_bn:
        from ..io.fold import fold_batchnorm
        spec, arrays = fold_batchnorm(spec, arrays)
    if arrays:
        net = Net(spec, init=False)
        net.load_params(arrays)
    else:   # a bare .prototxt: the structure only, weights from the spec's fillers
        net = Net(spec)
        print(f"note: {args.src} holds no weights; the net gets its fillers' random weights")
    labels = None
    if args.labels:
        with open(args.labels) as f:
            labels = [line.strip() for line in f if line.strip()]
    preprocess = None
    if args.preprocess:
        with open(args.preprocess) as f:
            preprocess = json.load(f)
    source = {"file": os.path.basename(args.src), "sha256": sha256_of(args.src), "format": fmt}
    save(net, args.output, preprocess=preprocess, labels=labels, source=source)
    n = sum(p.data.size for p in net.params.values())
    print(f"wrote {args.output}: {len(net.order)} layers, {n:,} parameters (from {fmt})")
    return 0
