"""decaf export MODEL -o model.onnx : a decaf net as an ONNX model, labels and recipe included."""

EXAMPLE = """examples:
  decaf export model.decaf -o model.onnx
  decaf export efficientnet_lite0 -o lite0.onnx --output-blob pool     # also expose the 1280-d features
The class names and the preprocessing recipe go into the ONNX file's metadata_props
(decaf.labels, decaf.preprocess, decaf.source: JSON text); 'decaf convert model.onnx' restores
them. Loss layers cannot be exported (export a deploy net)."""


def add_parser(sub):
    import argparse
    p = sub.add_parser("export", help="write a net as an ONNX model (with its labels and recipe)",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a .decaf file or a pretrained name")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--output-blob", action="append", default=[], metavar="BLOB",
                   help="another blob to make a graph output (repeat for several)")
    p.add_argument("--opset", type=int, default=13, help="ONNX opset (default 13)")
    return p


def export_onnx(net, path, extra_outputs=(), opset=13):
    """Write ``net`` to ``path`` (atomically) as ONNX with its metadata; returns the ModelProto."""
    import os
    import tempfile

    from ..io.blobfile import _write_atomically
    from ..io.onnx_convert import net_to_onnx
    from ..io.onnx_meta import add_metadata

    out_dir = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"{out_dir}: the output folder does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        model = net_to_onnx(net, os.path.join(tmp, "net.onnx"), opset=opset, extra_outputs=extra_outputs)
    add_metadata(model, net)
    data = model.SerializeToString()
    _write_atomically(str(path), lambda stream: stream.write(data))
    return model


def run(args):
    from ..io import load_model

    net = load_model(args.model)
    model = export_onnx(net, args.output, extra_outputs=args.output_blob, opset=args.opset)
    meta = {p.key for p in model.metadata_props}
    kept = [k[len("decaf."):] for k in ("decaf.labels", "decaf.preprocess") if k in meta]
    outputs = ", ".join(o.name for o in model.graph.output)
    print(f"wrote {args.output}: {len(model.graph.node)} ONNX nodes (opset {args.opset}), outputs {outputs}; "
          f"metadata: {', '.join(kept) if kept else 'no labels or recipe (the net has none)'}")
    return 0
