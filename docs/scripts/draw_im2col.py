"""Draw docs/img/im2col.png from the real ``decaf.kernels.reference.im2col``.

The input is tiny: one image, 2 channels of 3x3 (channel 0 holds 0..8, channel 1 holds 10..18,
so the tens digit names the channel), a 2x2 kernel, stride 1, no padding: a 2x2 output. Each of
the four output pixels reads one 2x2 window in both channels; im2col copies that window into one
column of ``cols`` (8 rows = 2 channels x 2 x 2 offsets, 4 columns = output pixels). The
convolution is then one matrix product, y = W cols.

    python docs/scripts/draw_im2col.py            # writes docs/img/im2col.png
    python docs/scripts/draw_im2col.py -o x.png
"""
import argparse
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))   # run from a checkout without installing decaf

from decaf.kernels import reference  # noqa: E402
COLOURS = ["#e06666", "#6fa8dc", "#93c47d", "#f6b26b"]   # one per output pixel (oh, ow)


def tiny_im2col():
    """(x, cols): the example, computed by the reference kernel."""
    x = np.concatenate([np.arange(9), 10 + np.arange(9)]).reshape(1, 2, 3, 3).astype(np.float32)
    cols = np.empty((2 * 2 * 2, 1 * 2 * 2), np.float32)
    reference.im2col(x, cols, kernel=(2, 2), stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), out_hw=(2, 2))
    return x, cols


def draw(path):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import FancyArrowPatch, Rectangle

    x, cols = tiny_im2col()
    C, kh, kw, Ho, Wo = 2, 2, 2, 2, 2
    fig, ax = plt.subplots(figsize=(13, 8.2))
    ax.set_xlim(-1.2, 22.0)
    ax.set_ylim(-18.8, 2.2)
    ax.set_aspect("equal")
    ax.axis("off")

    def cell(x0, y0, text, face="white", edge="#888888", weight="normal", lw=0.8, width=1.0):
        ax.add_patch(Rectangle((x0, y0 - 1), width, 1, facecolor=face, edgecolor=edge, linewidth=lw))
        ax.text(x0 + width / 2, y0 - 0.5, text, ha="center", va="center", fontsize=10, weight=weight)

    ax.text(2.75, 1.4, "x: 1 image, 2 channels of 3×3\nkernel 2×2, stride 1, no padding → output 2×2",
            ha="center", va="center", fontsize=10.5)
    # Left: for each output pixel, the input with that pixel's window highlighted in both channels.
    for o in range(Ho * Wo):
        oh, ow = divmod(o, Wo)
        top = -o * 4.6
        for c in range(C):
            left = c * 3.6
            if o == 0:
                ax.text(left + 1.5, top + 0.35, f"channel {c}", ha="center", fontsize=9)
            for h in range(3):
                for w in range(3):
                    inside = oh <= h < oh + kh and ow <= w < ow + kw
                    cell(left + w, top - h, f"{int(x[0, c, h, w])}",
                         face=COLOURS[o] if inside else "white", weight="bold" if inside else "normal")
        ax.text(-0.4, top - 1.5, f"({oh},{ow})", ha="right", va="center", fontsize=10, color=COLOURS[o],
                weight="bold")
        ax.add_patch(FancyArrowPatch((6.9, top - 1.5), (9.2, top - 1.5), arrowstyle="-|>", mutation_scale=12,
                                     color=COLOURS[o], linewidth=1.6))
        ax.text(9.3, top - 1.5, f"column {o}", ha="left", va="center", fontsize=9, color=COLOURS[o], weight="bold")

    # Right: cols, one column per output pixel, one row per (channel, kernel row, kernel column).
    x0, y0, cw = 16.0, -1.0, 1.3
    ax.text(x0 + 2 * cw, 1.4, "cols = im2col(x)\n(C·kh·kw) × (Ho·Wo) = 8 × 4", ha="center", va="center",
            fontsize=10.5)
    for o in range(Ho * Wo):
        oh, ow = divmod(o, Wo)
        ax.text(x0 + (o + 0.5) * cw, y0 + 0.3, f"{o}", ha="center", fontsize=9, color=COLOURS[o], weight="bold")
    for r in range(C * kh * kw):
        c, rest = divmod(r, kh * kw)
        i, j = divmod(rest, kw)
        ax.text(x0 - 0.15, y0 - r - 0.5, f"c={c} i={i} j={j}", ha="right", va="center", fontsize=8.5)
        for o in range(Ho * Wo):
            cell(x0 + o * cw, y0 - r, f"{int(cols[r, o])}", face=COLOURS[o], edge="white", lw=1.5, width=cw)
    ax.text(x0 + 2 * cw, y0 - 8.3, "row (c·kh + i)·kw + j, column oh·Wo + ow", ha="center", va="top", fontsize=9)

    # Bottom right: the GEMM.
    ax.text(x0 + 2 * cw, -13.5, "y = W · cols   (one GEMM)\n"
            "W: K × 8,  y: K × 4 → K × 2 × 2\n\n"
            "backward:\n"
            "dW = dy · colsᵀ\n"
            "dcols = Wᵀ · dy,  dx = col2im(dcols)",
            ha="center", va="center", fontsize=10,
            bbox={"boxstyle": "round,pad=0.5", "facecolor": "#f3f3f3", "edgecolor": "#999999"})
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return x, cols


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default=str(HERE.parent / "img" / "im2col.png"))
    args = parser.parse_args(argv)
    draw(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
