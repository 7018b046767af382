"""decaf tsne FEATURES.npz -o fig.png : a 2-D t-SNE map of features, coloured by label (DeCAF's Figure 1)."""
import sys

EXAMPLE = """examples:
  decaf tsne feats.npz -o tsne.png
  decaf tsne feats.npz --blob fc --perplexity 50 --title "Lite0 logits" -o tsne_fc.png --coords xy.npz

The features are reduced to 50 dimensions by PCA, then embedded by scikit-learn's t-SNE
(PCA initialisation, fixed seed), and drawn one colour per label."""


def add_parser(sub):
    import argparse
    p = sub.add_parser("tsne", help="t-SNE picture of extracted features, coloured by label",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("features", metavar="FEATURES.npz", help="a file written by 'decaf extract'")
    p.add_argument("-o", "--output", required=True, metavar="FIG.png", help="the picture to write")
    p.add_argument("--blob", help="the feature array to use (needed if the file has several)")
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default 30)")
    p.add_argument("--pca", type=int, default=50, help="PCA dimensions before t-SNE; 0: none (default 50)")
    p.add_argument("--max-points", type=int, default=5000, help="random subset above this many images (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--title", help="the picture's title (default: file and blob)")
    p.add_argument("--coords", metavar="OUT.npz", help="also save the 2-D coordinates, labels and paths")
    return p


def embed(X, perplexity=30.0, pca=50, seed=0):
    """(N, 2) t-SNE coordinates of X (after PCA to ``pca`` dimensions when X is wider)."""
    import numpy as np
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    X = np.asarray(X, np.float64)
    if pca and X.shape[1] > pca and X.shape[0] > pca:
        X = PCA(n_components=pca, random_state=seed).fit_transform(X)
    perplexity = min(perplexity, max(1.0, (X.shape[0] - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(X)


def plot(xy, labels, path, title=""):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    classes = sorted(set(labels), key=lambda c: (len(c), c))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6.4, 6.0), dpi=110)
    for i, c in enumerate(classes):
        sel = np.asarray(labels) == c
        ax.scatter(xy[sel, 0], xy[sel, 1], s=7, color=cmap(i % cmap.N), label=c or "(none)", alpha=0.8,
                   linewidths=0)
    if len(classes) <= 20:
        ax.legend(markerscale=2.5, fontsize=8, loc="best", frameon=True, ncol=2 if len(classes) > 10 else 1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(args):
    import os

    import numpy as np

    from ..transfer import load_feature_set

    X, labels, paths, blob = load_feature_set(args.features, args.blob)
    if len(X) < 5:
        raise ValueError(f"{args.features}: t-SNE needs at least 5 images, the file has {len(X)}")
    if len(X) > args.max_points:
        keep = np.sort(np.random.default_rng(args.seed).choice(len(X), args.max_points, replace=False))
        X, labels, paths = X[keep], labels[keep], paths[keep] if len(paths) else paths
        print(f"using a random subset of {args.max_points} images", file=sys.stderr)
    xy = embed(X, args.perplexity, args.pca, args.seed)
    title = args.title or f"t-SNE of {os.path.basename(args.features)}:{blob} ({X.shape[1]}-d, {len(X)} images)"
    plot(xy, list(labels), args.output, title)
    if args.coords:
        np.savez(args.coords, xy=xy.astype(np.float32), labels=labels, paths=paths)
    print(f"wrote {args.output} ({len(X)} points, {len(set(labels))} labels)")
    return 0
