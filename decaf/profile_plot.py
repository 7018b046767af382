"""The profiler's picture, after the paper's Figure 3: (a) time per layer, (b) time by layer type.

    from decaf.profile_plot import plot_profile
    plot_profile(result, "caffenet.png")        # result: a decaf.profile.ProfileResult

Matplotlib with the Agg canvas (no display, no pyplot state). With a backward profile the bars
stack forward and backward time and the pie shows both together.
"""

COLOURS = {"rest": "#bbbbbb", "conv": "#4e79a7", "fc": "#e15759", "pool": "#59a14f", "neuron": "#f28e2b",
           "LRN": "#b07aa1", "norm": "#76b7b2", "other": "#9c755f"}


MAX_BARS = 36     # a longer net shows its 35 most expensive layers and one bar for the rest


def plot_profile(result, path, top=None, dpi=110, title=None):
    """Write ``result`` as a PNG (or any format matplotlib knows, by extension) to ``path``.

    ``top``: how many of the most expensive layers get a time label (default 6). A net of more than
    36 layers shows its 35 most expensive layers, most expensive first, and one bar for the rest.
    Returns ``path``."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    layers = result.layers
    backward = result.total_backward_ms is not None
    # rows: (name, group, forward ms, backward ms); a long net shows its most expensive layers only
    rows = [(x.name, x.group, x.forward_ms, (x.backward_ms or 0.0) if backward else 0.0) for x in layers]
    grand = sum(f + b for _, _, f, b in rows) or 1.0
    subtitle = "(a) time per layer, in run order"
    if len(rows) > MAX_BARS:
        order = sorted(range(len(rows)), key=lambda i: -(rows[i][2] + rows[i][3]))
        keep = [rows[i] for i in order[:MAX_BARS - 1]]
        rest = [rows[i] for i in order[MAX_BARS - 1:]]
        rows = keep + [(f"({len(rest)} other layers)", "rest", sum(r[2] for r in rest), sum(r[3] for r in rest))]
        subtitle = f"(a) the {MAX_BARS - 1} most expensive of {len(layers)} layers"
    n = len(rows)
    fwd = [r[2] for r in rows]
    bwd = [r[3] for r in rows]
    total = [f + b for f, b in zip(fwd, bwd)]
    top = min(n, 6) if top is None else top
    ranked = sorted((i for i in range(n) if rows[i][1] != "rest"), key=lambda i: -total[i])[:top]

    height = max(6.0, 0.27 * n + 2.8)
    fig = Figure(figsize=(15, height), dpi=dpi)
    grid = fig.add_gridspec(1, 2, width_ratios=[1.55, 1.0], wspace=0.28,
                            left=0.11, right=0.97, top=1 - 1.25 / height, bottom=0.9 / height)

    # (a) one bar per layer, from the top
    ax = fig.add_subplot(grid[0])
    y = list(range(n))
    colours = [COLOURS.get(r[1], COLOURS["other"]) for r in rows]
    ax.barh(y, fwd, color=colours, edgecolor="none", height=0.75)
    if backward:
        ax.barh(y, bwd, left=fwd, color=colours, alpha=0.45, hatch="///", edgecolor="white",
                linewidth=0, height=0.75)
    ax.set_ylim(n - 0.4, -0.6)
    ax.set_yticks(y)
    ax.set_yticklabels([r[0] for r in rows], fontsize=10)
    for i in ranked:
        ax.text(total[i], i, f"  {rows[i][0]}: {total[i]:.1f} ms ({100 * total[i] / grand:.0f} %)",
                va="center", ha="left", fontsize=10, fontweight="bold")
    ax.set_xlim(0, max(total) * 1.45 if n else 1)
    what = "forward + backward (hatched)" if backward else "forward"
    ax.set_xlabel(f"{what} time per batch of {result.batch} (ms, median of {result.iters})", fontsize=11)
    ax.set_title(subtitle, fontsize=13, loc="left")
    ax.tick_params(axis="x", labelsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    groups_present = [g for g in result.by_type]
    ax.legend(handles=[Patch(color=COLOURS.get(g, COLOURS["other"]), label=g) for g in groups_present],
              loc="lower right", fontsize=10, frameon=False)

    # (b) the pie by layer type
    ax = fig.add_subplot(grid[1])
    by_type = result.by_type
    times = [by_type[g]["forward_ms"] + (by_type[g].get("backward_ms") or 0.0) for g in groups_present]
    whole = sum(times) or 1.0
    wedges, _texts, autotexts = ax.pie(
        times, colors=[COLOURS.get(g, COLOURS["other"]) for g in groups_present], startangle=90,
        counterclock=False, autopct=lambda p: f"{p:.0f} %" if p >= 4 else "", pctdistance=0.72,
        wedgeprops={"linewidth": 1, "edgecolor": "white"}, textprops={"fontsize": 12})
    for t in autotexts:
        t.set_color("white")
        t.set_fontweight("bold")
    ax.legend(wedges, [f"{g}: {t:.1f} ms ({100 * t / whole:.1f} %)" for g, t in zip(groups_present, times)],
              loc="upper center", bbox_to_anchor=(0.5, 0.02), ncol=2, fontsize=10.5, frameon=False)
    ax.set_title(f"(b) {what.split(' (')[0]} time by layer type", fontsize=13)
    ax.set_aspect("equal")

    per_image = result.net_forward_ms / result.batch
    head = title or (f"{result.net}: batch {result.batch}, {result.phase} phase - forward "
                     f"{result.net_forward_ms:.1f} ms per batch ({per_image:.2f} ms per image)")
    fig.suptitle(head, fontsize=14, fontweight="bold", y=1 - 0.3 / height)
    fig.text(0.5, 1 - 0.72 / height, f"{result.cpu}; {result.threads} threads (NumPy's BLAS {result.blas_threads}); "
             f"{result.blas}; decaf {result.decaf_version}, {result.backend} kernels",
             ha="center", fontsize=10, color="#444444")
    fig.savefig(path, dpi=dpi)
    return path
