"""Oquab et al.'s patch recipe on scenes composed from real photos, with known boxes.

    python examples/oquab_scenes.py --out docs/img --overlays 2     # ~70 s on 2 cores

Three objects (scikit-image's photos: chelsea -> "cat", coffee -> "cup", astronaut ->
"person") are pasted at random sizes, positions and flips on texture backgrounds. Training
scenes (grass, brick, camera-man backgrounds) give labelled patches (decaf.patches: the
multi-scale grid, the 0.2/0.6 overlap rules, 10 % of the background patches); the
pretrained EfficientNet-Lite0 gives their frozen 1280-d ``pool`` features; the adaptation
layers (FCa 2048 + ReLU + dropout + FCb 4 + softmax, decaf.transfer.AdaptationLayers) are
trained on them by SGD. Test scenes use an unseen background (gravel) and new layouts:
every patch is scored, image scores are mean(y ** 5), and per-pixel score maps are saved
as PNG overlays, with a JSON summary of where the maps peak.

The objects are the same three photos in training and test scenes (only size, position,
flip and background change), so this shows that the machinery localises; it is not a
measure of generalisation to new object instances.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))   # run from a checkout

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

CLASSES = ["cat", "cup", "person"]
WIDTH, HEIGHT = 480, 360


def sources():
    from skimage import data
    objects = {"cat": data.chelsea(), "cup": data.coffee(), "person": data.astronaut()}
    train_bg = [data.grass(), data.brick(), data.camera()]
    test_bg = [data.gravel()]
    return objects, train_bg, test_bg


def background(texture, rng):
    """A WIDTH x HEIGHT RGB crop of a grey texture, tinted at random."""
    t = np.asarray(texture, np.float64)
    y = rng.integers(0, t.shape[0] - HEIGHT + 1)
    x = rng.integers(0, t.shape[1] - WIDTH + 1)
    grey = t[y:y + HEIGHT, x:x + WIDTH, None]
    tint = rng.uniform(0.6, 1.0, size=3)
    return Image.fromarray(np.uint8(np.clip(grey * tint, 0, 255)))


def compose(objects, texture, classes, rng):
    """A scene with one pasted photo per class in ``classes``: (PIL image, boxes, labels)."""
    scene = background(texture, rng)
    boxes, labels = [], []
    for cls in classes:
        original = Image.fromarray(objects[cls])
        long_side = int(rng.integers(110, 200))
        flip = rng.random() < 0.5
        for attempt in range(300):   # a spot 10 px away from the other objects; shrink if none is found
            side = long_side - attempt // 50 * 15
            scale = side / max(original.size)
            w, h = max(1, round(original.size[0] * scale)), max(1, round(original.size[1] * scale))
            x, y = int(rng.integers(0, WIDTH - w + 1)), int(rng.integers(0, HEIGHT - h + 1))
            if all(x + w + 10 <= b[0] or b[2] + 10 <= x or y + h + 10 <= b[1] or b[3] + 10 <= y for b in boxes):
                break
        else:
            continue
        photo = original.resize((w, h), Image.Resampling.BICUBIC)
        if flip:
            photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        scene.paste(photo, (x, y))
        boxes.append((x, y, x + w, y + h))
        labels.append(cls)
    return scene, np.asarray(boxes, np.int64).reshape(-1, 4), labels


def layout(rng, n_max):
    n = int(rng.integers(1, n_max + 1))
    return list(rng.choice(CLASSES, n, replace=False))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/img", help="folder for the pictures and the JSON summary")
    parser.add_argument("--train", type=int, default=24, help="training scenes (default 24)")
    parser.add_argument("--test", type=int, default=4, help="test scenes (default 4)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None)
    parser.add_argument("--overlays", type=int, nargs="*", default=None,
                        help="test scenes whose per-class overlay PNGs are written (default: all)")
    args = parser.parse_args(argv)

    from decaf.patches import (BACKGROUND, image_scores, label_patches, patch_boxes, patch_features, save_overlay,
                               score_map, subsample_background)
    from decaf.pretrained import load_model
    from decaf.transfer import AdaptationLayers

    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    objects, train_bg, test_bg = sources()
    net = load_model(args.model)
    names = CLASSES + [BACKGROUND]
    t0 = time.perf_counter()

    # training patches: positives by the overlap rules, 10 % of the background
    feats, targets, counts = [], [], {n: 0 for n in names}
    for i in range(args.train):
        scene, boxes, labels = compose(objects, train_bg[i % len(train_bg)], layout(rng, 3), rng)
        patches, _ = patch_boxes(WIDTH, HEIGHT)
        patch_labels = label_patches(patches, boxes, labels)
        keep = subsample_background(patch_labels, 0.1, rng)
        feats.append(patch_features(net, scene, patches[keep]))
        targets += [names.index(c) for c in patch_labels[keep]]
        for c in patch_labels[keep]:
            counts[c] += 1
    X, y = np.concatenate(feats), np.asarray(targets)
    t_feat = time.perf_counter() - t0
    print(f"{len(X)} training patches from {args.train} scenes {counts} in {t_feat:.0f} s", flush=True)
    model = AdaptationLayers(len(names), hidden=2048, dropout=0.5, lr=0.01, epochs=args.epochs,
                             batch_size=64, seed=args.seed).fit(X, y)
    train_acc = float(np.mean(model.predict_proba(X).argmax(1) == y))
    print(f"adaptation layers: loss {model.losses[0]:.3f} -> {model.losses[-1]:.3f}, "
          f"training accuracy {train_acc:.3f}", flush=True)

    # test scenes: every patch scored, image scores and score maps
    summary = {"train_scenes": args.train, "train_patches": counts, "train_accuracy": train_acc,
               "epochs": args.epochs, "loss_first_last": [model.losses[0], model.losses[-1]], "scenes": []}
    panels = []
    for j in range(args.test):
        classes = [CLASSES[(j + k) % 3] for k in range(1 + j % 3)] if j < 3 else CLASSES
        scene, boxes, labels = compose(objects, test_bg[j % len(test_bg)], classes, rng)
        patches, _ = patch_boxes(WIDTH, HEIGHT)
        probs = model.predict_proba(patch_features(net, scene, patches))
        scores = image_scores(probs, k=5)
        maps = score_map(patches, probs, WIDTH, HEIGHT)
        record = {"scene": j, "objects": [], "image_scores": {n: float(s) for n, s in zip(names, scores)},
                  "patches": int(len(patches))}
        for box, cls in zip(boxes, labels):
            m = maps[names.index(cls)]
            peak_y, peak_x = np.unravel_index(np.argmax(m), m.shape)
            inside = np.zeros(m.shape, bool)
            inside[box[1]:box[3], box[0]:box[2]] = True
            record["objects"].append({"class": cls, "box": [int(v) for v in box],
                                      "peak": [int(peak_x), int(peak_y)],
                                      "peak_inside_box": bool(inside[peak_y, peak_x]),
                                      "mean_inside": float(m[inside].mean()), "mean_outside": float(m[~inside].mean())})
        present = sorted(set(labels))
        absent = [c for c in CLASSES if c not in present]
        record["lowest_present_score"] = min(record["image_scores"][c] for c in present)
        record["highest_absent_score"] = max((record["image_scores"][c] for c in absent), default=None)
        summary["scenes"].append(record)
        for cls in sorted(set(labels)) if args.overlays is None or j in args.overlays else []:
            save_overlay(scene, maps[names.index(cls)], os.path.join(args.out, f"oquab_scene{j}_{cls}.png"),
                         alpha=0.7, boxes=boxes[[lab == cls for lab in labels]])
        panels.append((scene, boxes, labels, maps, scores))
        print(f"scene {j}: {labels}; image scores " +
              ", ".join(f"{n} {s:.3f}" for n, s in zip(names, scores)) + "; peaks inside their box: " +
              str([o["peak_inside_box"] for o in record["objects"]]), flush=True)
    objs = [o for r in summary["scenes"] for o in r["objects"]]
    summary["objects"] = len(objs)
    summary["peaks_inside_box"] = sum(o["peak_inside_box"] for o in objs)
    summary["mean_inside_over_outside"] = float(np.mean([o["mean_inside"] / max(o["mean_outside"], 1e-9)
                                                         for o in objs]))
    absent = [r["highest_absent_score"] for r in summary["scenes"] if r["highest_absent_score"] is not None]
    summary["every_present_class_above_every_absent"] = bool(
        min(r["lowest_present_score"] for r in summary["scenes"]) > max(absent, default=0))
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    with open(os.path.join(args.out, "oquab_scenes.json"), "w") as f:
        json.dump(summary, f, indent=1)
    figure(panels, names, os.path.join(args.out, "oquab_scenes.jpg"))
    print(f"{summary['peaks_inside_box']} of {summary['objects']} score-map peaks inside their object's box; "
          f"mean score inside / outside the box: {summary['mean_inside_over_outside']:.1f}x; every present class "
          f"scores above every absent one: {summary['every_present_class_above_every_absent']}")
    print(f"wrote {args.out}/oquab_scenes.jpg, oquab_scenes.json and per-class overlays "
          f"({summary['seconds']} s)")


def figure(panels, names, path):
    """One row per test scene: the scene with its boxes, then the score map of each object class."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from decaf.patches import overlay

    fig, axes = plt.subplots(len(panels), 1 + len(CLASSES), figsize=(3.2 * (1 + len(CLASSES)), 2.5 * len(panels)),
                             dpi=90, squeeze=False)
    for row, (scene, boxes, labels, maps, scores) in zip(axes, panels):
        row[0].imshow(scene)
        for b, c in zip(boxes, labels):
            row[0].add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, color="white", lw=1.5))
            row[0].text(b[0] + 3, b[1] + 14, c, color="white", fontsize=8, weight="bold")
        row[0].set_title("scene (true boxes)", fontsize=9)
        top = max(maps[names.index(c)].max() for c in CLASSES)     # one colour scale per scene
        row[1].set_ylabel(f"colour scale 0 to {top:.2f}", fontsize=8)
        for ax, cls in zip(row[1:], CLASSES):
            ax.imshow(overlay(scene, maps[names.index(cls)], alpha=0.7, vmax=top))
            ax.set_title(f"{cls}: image score {scores[names.index(cls)]:.3f}", fontsize=9)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, pil_kwargs={"quality": 85})   # JPEG: the texture backgrounds make a 2 MB PNG
    plt.close(fig)


if __name__ == "__main__":
    main()
