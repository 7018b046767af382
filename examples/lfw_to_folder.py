"""Write scikit-image's ``lfw_subset`` (100 faces, 100 non-faces) as PNG files in class folders, plus raw pixels.

    python examples/lfw_to_folder.py /tmp/lfw
    python examples/lfw_to_folder.py /tmp/lfw --domains     # /tmp/lfw/source and /tmp/lfw/target

Gives ``DIR/face/000.png ... DIR/nonface/199.png`` (the 25x25 grey crops, saved as they are:
decaf's recipe resizes them to the net's input) and ``DIR/pixels.npz``: the 625 grey levels
of each image (0..1) in the layout ``decaf extract`` writes (array ``pixels``, ``paths``,
``labels``), so that ``decaf transfer`` compares raw pixels with network features.
The images are a subset of Labeled Faces in the Wild (faces) and crops of other photos
(non-faces); scikit-image ships them (``skimage.data.lfw_subset``).

``--domains`` makes a domain shift instead: ``DIR/source/`` holds the first 50 faces and
50 non-faces as they are, ``DIR/target/`` the other 50 + 50 as photographic negatives
(255 - x) blurred by a Gaussian of radius 1 pixel, a different "camera" for the same two
classes (no image is in both).
"""
import argparse
import json
import os

import numpy as np
from PIL import Image


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder to create")
    parser.add_argument("--domains", action="store_true", help="write source/ and target/ (a domain shift)")
    args = parser.parse_args(argv)

    from skimage.data import lfw_subset
    images = lfw_subset()                      # (200, 25, 25) float in 0..1: 100 faces then 100 non-faces
    paths, labels = [], []
    for i, image in enumerate(images):
        label = "face" if i < 100 else "nonface"
        img = Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))
        if args.domains:
            target = i % 100 >= 50
            if target:
                from PIL import ImageFilter, ImageOps
                img = ImageOps.invert(img).filter(ImageFilter.GaussianBlur(1))
            label = f"{'target' if target else 'source'}/{label}"
        os.makedirs(os.path.join(args.out, label), exist_ok=True)
        rel = f"{label}/{i:03d}.png"
        img.save(os.path.join(args.out, rel))
        paths.append(rel)
        labels.append(label)
    if args.domains:
        print(f"wrote {args.out}/source (50 face, 50 nonface) and {args.out}/target (50 + 50, negatives, blurred)")
        return
    np.savez(os.path.join(args.out, "pixels.npz"), pixels=images.reshape(len(images), -1).astype(np.float32),
             paths=np.asarray(paths), labels=np.asarray(labels), skipped=np.zeros(0, "<U1"),
             skipped_errors=np.zeros(0, "<U1"), root=np.asarray(os.path.abspath(args.out)),
             info=np.asarray(json.dumps({"blobs": ["pixels"], "model": "raw pixels"})))
    print(f"wrote {len(paths)} images to {args.out} (100 face, 100 nonface) and {args.out}/pixels.npz")


if __name__ == "__main__":
    main()
