"""Write scikit-learn's 8x8 digits as PNG files in class folders, plus their raw pixels.

    python examples/digits_to_folder.py /tmp/digits            # all 1797 images
    python examples/digits_to_folder.py /tmp/digits --per-class 100
    python examples/digits_to_folder.py /tmp/shifted --jitter    # random size and place on the canvas

Gives ``DIR/0/0000.png ... DIR/9/1796.png`` (dark ink on white, upscaled to
``--size`` pixels so that decaf's preprocessing takes them to the net's input)
and ``DIR/pixels.npz``: the original 64 grey levels per image in the layout
``decaf extract`` writes (array ``pixels``, ``paths``, ``labels``), so that
``decaf transfer`` compares raw pixels with network features on the same images.

``--jitter`` pastes each digit at a random size (40-90 % of the canvas) and a random
place; ``pixels`` then holds the 32x32 grey levels of the PNG (1024 values, 0..16),
since the 8x8 originals no longer describe the image.
"""
import argparse
import json
import os

import numpy as np
from PIL import Image


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder to create")
    parser.add_argument("--per-class", type=int, default=None, help="keep the first N images of each digit")
    parser.add_argument("--size", type=int, default=64, help="side of the PNG files (default 64)")
    parser.add_argument("--jitter", action="store_true", help="random size and position of each digit")
    parser.add_argument("--seed", type=int, default=0, help="seed of --jitter")
    args = parser.parse_args(argv)

    from sklearn.datasets import load_digits
    digits = load_digits()
    keep, count = [], {}
    for i, label in enumerate(digits.target):
        if args.per_class is None or count.get(label, 0) < args.per_class:
            keep.append(i)
            count[label] = count.get(label, 0) + 1
    rng = np.random.default_rng(args.seed)
    paths, labels, pixels = [], [], []
    for i in keep:
        label = str(digits.target[i])
        os.makedirs(os.path.join(args.out, label), exist_ok=True)
        grey = 255 - np.round(digits.images[i] * (255 / 16)).astype(np.uint8)    # 0..16 ink -> white paper
        if args.jitter:
            side = int(round(args.size * rng.uniform(0.4, 0.9)))
            digit = Image.fromarray(grey).resize((side, side), Image.Resampling.BICUBIC)
            img = Image.new("L", (args.size, args.size), 255)
            img.paste(digit, (int(rng.integers(0, args.size - side + 1)), int(rng.integers(0, args.size - side + 1))))
        else:
            img = Image.fromarray(grey).resize((args.size, args.size), Image.Resampling.BICUBIC)
        rel = f"{label}/{i:04d}.png"
        img.save(os.path.join(args.out, rel))
        paths.append(rel)
        labels.append(label)
        if args.jitter:
            small = np.asarray(img.resize((32, 32), Image.Resampling.BILINEAR), np.float32)
            pixels.append((255 - small).ravel() * (16 / 255))
        else:
            pixels.append(digits.data[i].astype(np.float32))
    order = np.argsort(paths, kind="stable")    # the order decaf extract walks the folder in
    what = "32x32 pixels of the jittered PNG" if args.jitter else "8x8"
    info = {"model": f"raw pixels (sklearn digits, {what})", "blobs": ["pixels"], "relu": {"pixels": ""}}
    np.savez(os.path.join(args.out, "pixels.npz"), pixels=np.stack(pixels)[order],
             paths=np.asarray(paths)[order], labels=np.asarray(labels)[order],
             skipped=np.zeros(0, "<U1"), skipped_errors=np.zeros(0, "<U1"),
             root=np.asarray(os.path.abspath(args.out)), info=np.asarray(json.dumps(info)))
    print(f"wrote {len(keep)} PNG files ({args.size}x{args.size}) in {len(count)} class folders under {args.out}, "
          f"and {os.path.join(args.out, 'pixels.npz')}")


if __name__ == "__main__":
    main()
