"""decaf draw MODEL -o net.png: the layer graph with blob shapes (matplotlib, no graphviz)."""

EXAMPLE = """examples:
  decaf draw caffenet -o caffenet.png
  decaf draw lenet -o lenet.svg            # the file extension picks the format
  decaf draw my_net.json -o my_net.png     # a spec file (or inline JSON, or a .decaf file)
Boxes are layers (name, type, main parameters); arrows are blobs, labelled with their shapes at
batch 1. Long nets (efficientnet_lite0) give a tall image."""


def add_parser(sub):
    import argparse
    p = sub.add_parser("draw", help="draw a net's layer graph with blob shapes", epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a zoo model, a spec .json file, inline JSON or a .decaf file")
    p.add_argument("-o", "--output", required=True, help="image file to write (.png, .svg, .pdf)")
    p.add_argument("--dpi", type=int, default=100, help="resolution of raster images (default 100)")
    p.add_argument("--title", default=None, help="title above the graph (default: the net's name)")
    return p


def run(args):
    from ..draw import draw_net
    from .gradcheck import model_spec

    spec, _ = model_spec(args.model)
    nodes, edges = draw_net(spec, args.output, title=args.title, dpi=args.dpi)
    layers = sum(n.kind == "layer" for n in nodes.values())
    print(f"wrote {args.output}: {layers} layers, {len(edges)} blob arrows")
    return 0
