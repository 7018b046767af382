"""Draw a net's layer graph: one box per layer, arrows along blobs labelled with their shapes.

    from decaf.draw import draw_net
    draw_net(get_spec("caffenet"), "caffenet.png")

The picture is built from the same ``Net`` the rest of decaf runs (built at batch 1 without
filling weights), so the shapes are the ones the net checks at build time. Automatic Split layers
are left out: a blob read by several layers simply has several arrows. Layout: top to bottom, a
layer's row is one below its deepest input; arrows that skip rows (residual connections) bend
to the side so they do not run through the boxes between. Matplotlib (Agg) only, no graphviz.
"""
from dataclasses import dataclass, field

# Box colours (fill, edge) by the layer's profile group; outputs and losses, and layers that are
# the identity at test time, get their own.
COLOURS = {
    "conv": ("#cfe2f3", "#3d6fa8"),
    "fc": ("#d9d2e9", "#674ea7"),
    "pool": ("#d9ead3", "#4f8a3a"),
    "LRN": ("#fff2cc", "#b8860b"), "norm": ("#fff2cc", "#b8860b"),
    "neuron": ("#fce5cd", "#c27c0e"),
    "train_only": ("#eeeeee", "#777777"),
    "loss": ("#f4cccc", "#a61c1c"),
}
DEFAULT_COLOUR = ("#ffffff", "#444444")


def colour_key(layer):
    """The COLOURS key of a layer: "loss" for losses and probability outputs, else its group."""
    if layer.is_loss or "probabilities" in layer.roles:
        return "loss"
    return "train_only" if "train_only" in layer.roles else layer.group
BLOB_COLOUR = ("#f3f3f3", "#999999")

# Geometry in inches (the figure is drawn 1 data unit = 1 inch).
BOX_W, BOX_H = 2.5, 0.56
COL_GAP, ROW_GAP = 3.4, 1.0


@dataclass
class Node:
    name: str
    kind: str                   # "input", "layer" or "output"
    type_name: str = ""
    colour: str = ""            # a COLOURS key
    detail: str = ""
    rank: int = 0
    x: float = 0.0
    parents: list = field(default_factory=list)


@dataclass
class Edge:
    src: str
    dst: str
    blob: str
    shape: tuple


def shape_text(shape):
    return "×".join(map(str, shape)) if shape else "scalar"


def net_graph(spec):
    """(nodes {name: Node} in drawing order, edges [Edge]) of a spec's layer graph at batch 1."""
    from .net import Net
    net = Net(spec, init=False)
    nodes, edges = {}, []
    writer = {}                     # id(Blob) -> node that last wrote it
    for name in net.input_shapes:
        nodes[name] = Node(name, "input", detail="input")
        writer[id(net.blobs[name])] = name
    for layer in net.order:
        bottoms, tops = net.bottoms[layer.name], net.tops[layer.name]
        if "split" in layer.roles:       # inserted by the net: read through it
            for top in tops:
                writer[id(top)] = writer[id(bottoms[0])]
            continue
        inplace = any(t is b for t in tops for b in bottoms)
        detail = layer.summary() + (" (in place)" if inplace else "")
        node = Node(layer.name, "layer", layer.type_name, colour_key(layer), detail.strip())
        nodes[node.name] = node
        for blob in bottoms:
            src = writer[id(blob)]
            # the name the spec uses for this blob (a Split's top is named after the split)
            name = next(b for b, x in zip(layer.bottom_names, bottoms) if x is blob)
            edges.append(Edge(src, node.name, name, blob.shape))
            node.parents.append(src)
        for top in tops:
            writer[id(top)] = node.name
    for name in net.output_names:
        out = Node(f"{name} (output)", "output", detail="output")
        src = writer[id(net.blobs[name])]
        out.parents.append(src)
        nodes[out.name] = out
        edges.append(Edge(src, out.name, name, net.blobs[name].shape))
    _layout(nodes)
    return nodes, edges


def _layout(nodes):
    """Rows by longest path from the inputs; within a row, order by the parents' mean x."""
    for node in nodes.values():        # nodes are in a topological order
        node.rank = 1 + max((nodes[p].rank for p in node.parents), default=-1)
    for node in nodes.values():        # an input sits just above its first reader (labels: near the loss)
        if node.kind == "input":
            readers = [n.rank for n in nodes.values() if node.name in n.parents]
            node.rank = min(readers, default=1) - 1
    rows = {}
    for node in nodes.values():
        rows.setdefault(node.rank, []).append(node)
    for rank in sorted(rows):
        row = rows[rank]
        if rank > 0:
            row.sort(key=lambda n: sum(nodes[p].x for p in n.parents) / max(len(n.parents), 1))
        for i, node in enumerate(row):
            node.x = (i - (len(row) - 1) / 2) * COL_GAP


def draw_net(spec, path, title=None, dpi=100):
    """Draw ``spec`` (a net spec dict or a Net) to an image file; returns (nodes, edges)."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    spec = getattr(spec, "spec", spec)
    nodes, edges = net_graph(spec)
    ranks = max(n.rank for n in nodes.values()) + 1
    xs = [n.x for n in nodes.values()]
    left, right = min(xs) - BOX_W / 2 - 1.6, max(xs) + BOX_W / 2 + 1.6
    top, bottom = 0.9, -(ranks - 1) * ROW_GAP - 0.6
    fig = plt.figure(figsize=(right - left, top - bottom))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.axis("off")
    name = spec.get("name", "net")
    ax.text((left + right) / 2, top - 0.3, title or f"{name}: blob shapes at batch 1", ha="center",
            va="center", fontsize=12, weight="bold")

    def y_of(node):
        return -node.rank * ROW_GAP

    for node in nodes.values():
        if node.kind == "layer":
            fill, edge = COLOURS.get(node.colour, DEFAULT_COLOUR)
            style, text = "round,pad=0.02,rounding_size=0.08", f"{node.name}\n{node.type_name} {node.detail}".strip()
        else:
            (fill, edge), style = BLOB_COLOUR, "round,pad=0.02,rounding_size=0.25"
            text = f"{node.name.replace(' (output)', '')}\n{node.detail}"
        ax.add_patch(FancyBboxPatch((node.x - BOX_W / 2, y_of(node) - BOX_H / 2), BOX_W, BOX_H,
                                    boxstyle=style, facecolor=fill, edgecolor=edge, linewidth=1.2))
        ax.text(node.x, y_of(node), text, ha="center", va="center", fontsize=8.5, linespacing=1.3)

    # several arrows into one box land side by side, ordered by where they come from
    arrivals = {}
    for i, edge in enumerate(edges):
        if nodes[edge.dst].rank - nodes[edge.src].rank <= 1:
            arrivals.setdefault(edge.dst, []).append(i)
    landing = {}
    for dst, items in arrivals.items():
        items.sort(key=lambda i: nodes[edges[i].src].x)
        for k, i in enumerate(items):
            landing[i] = (k - (len(items) - 1) / 2) * min(BOX_W / 2 / max(len(items) - 1, 1), 0.5)

    for i, edge in enumerate(edges):
        a, b = nodes[edge.src], nodes[edge.dst]
        if b.rank - a.rank <= 1:     # the next row: straight down
            start, end, rad = (a.x, y_of(a) - BOX_H / 2), (b.x + landing.get(i, 0.0), y_of(b) + BOX_H / 2), 0.0
        else:                        # skipping rows: from the left side to the left side, bulging left
            start, end = (a.x - BOX_W / 2, y_of(a)), (b.x - BOX_W / 2, y_of(b))
            # a quadratic curve bulges rad * length / 2 sideways
            rad = min(1.0, 1.2 / max(abs(end[1] - start[1]), 1e-9))
        dx, dy = end[0] - start[0], end[1] - start[1]
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, linewidth=1.0,
                                     color="#555555", connectionstyle=f"arc3,rad={rad}",
                                     shrinkA=0, shrinkB=1))
        # label at the curve's midpoint: the chord's midpoint moved by the bulge (to the right of travel)
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        if rad:
            mx, my = mx + dy * rad / 2, my - dx * rad / 2
        ax.text(mx + 0.08, my, f"{edge.blob} {shape_text(edge.shape)}", ha="left", va="center",
                fontsize=7, color="#333333",
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return nodes, edges
