"""Pictures for the teaching view: a blob's feature maps, and the first layer's filters, as one
PNG grid each (Caffe's ``vis_square`` idea: tiles in a near-square grid, one pixel of padding).

Values are scaled to 0..255 over the whole grid, not per tile, so a tile's brightness says how
strongly that channel responds compared with the others.
"""
import io
import math

import numpy as np
from PIL import Image


def tile_grid(tiles, min_tile=32, pad=1):
    """(N, h, w) or (N, h, w, 3) floats -> one uint8 image, tiles upscaled (nearest) to >= min_tile."""
    tiles = np.asarray(tiles, dtype=np.float32)
    lo, hi = float(tiles.min()), float(tiles.max())
    tiles = (tiles - lo) / (hi - lo) if hi > lo else np.zeros_like(tiles)
    tiles = (tiles * 255 + 0.5).astype(np.uint8)
    n, h, w = tiles.shape[:3]
    scale = max(1, math.ceil(min_tile / max(h, w)))
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = h * scale, w * scale
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    shape = (rows * (h + pad) + pad, cols * (w + pad) + pad) + tiles.shape[3:]
    grid = np.full(shape, 255, dtype=np.uint8)    # white padding separates the tiles
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top:top + h, left:left + w] = tiles[i]
    return grid


def png_bytes(array):
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def feature_maps_png(blob, max_maps=64):
    """One image's blob (C, H, W) -> a PNG of its first ``max_maps`` channels as grey tiles."""
    blob = np.asarray(blob)
    if blob.ndim != 3:
        raise ValueError(f"feature maps need a (C, H, W) blob, got shape {blob.shape}")
    return png_bytes(tile_grid(blob[:max_maps], min_tile=48))


def filters_png(weights, max_filters=96, bgr=False):
    """Conv weights (K, C, kh, kw) -> a PNG: colour tiles when C is 3 (``bgr``: the net reads BGR,
    so the channels are reversed to show them as RGB), else each filter's first input channel in grey."""
    weights = np.asarray(weights)[:max_filters]
    if weights.ndim != 4:
        raise ValueError(f"filters need (K, C, kh, kw) weights, got shape {weights.shape}")
    if weights.shape[1] == 3:
        tiles = weights.transpose(0, 2, 3, 1)
        tiles = tiles[..., ::-1] if bgr else tiles
    else:
        tiles = weights[:, 0]
    return png_bytes(tile_grid(tiles, min_tile=32))
