"""Predict a scene's mask with a segtrain ONNX model and nothing of segtrain: onnxruntime, numpy
and tifffile only. It does what `segtrain predict MODEL SCENE --out DIR` does, step by step as
the model's metadata "prediction" describes it, and writes the same mask (without the scene's
georeferencing, which `segtrain predict` copies):

    python examples/onnx_predict.py model.onnx scene.tif scene_mask.tif [--batch-size 16]

(`segtrain predict` runs 16 tiles per model call by default; another batch size may move a
pixel that lies within about 1e-6 of the threshold.)
"""
import argparse
import json

import numpy as np
import onnxruntime as ort
import tifffile

GDAL_NODATA = 42113


def read_scene(path, bands, nodata):
    """The model's bands as float32 (C, H, W), and each pixel's validity (the metadata's rule)."""
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        raw = series.asarray()
        tag = tif.pages[0].tags.get(GDAL_NODATA)
    if series.axes.endswith("S"):  # bands last (pixel-interleaved)
        raw = np.moveaxis(raw, -1, 0)
    raw = raw.reshape(-1, *raw.shape[-2:])[bands]
    if nodata is None and tag is not None:
        nodata = float(tag.value.strip())
    if nodata is None and raw.dtype.kind in "iu":
        nodata = 0
    valid = np.ones(raw.shape[1:], bool)
    if nodata is not None and not np.isnan(nodata):
        valid &= ~np.all(raw == np.asarray(nodata).astype(raw.dtype), axis=0)
    image = raw.astype(np.float32)
    valid &= ~np.isnan(image).any(axis=0)
    return image, valid


def origins(size, tile, overlap):
    stride = tile - overlap
    return [i * stride for i in range(1 + max(0, -(-(size - tile) // stride)))]


def window(tile):
    d = np.arange(tile) - (tile - 1) / 2
    g = np.exp(-0.5 * (d / (tile / 8)) ** 2)
    w = np.outer(g, g)
    return (w / w.max()).astype(np.float32)


def predict(model_path, scene_path, batch_size=16):
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    meta = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()
            if key in ("bands", "tile_size", "overlap", "threshold", "nodata")}
    tile, overlap = meta["tile_size"], meta["overlap"]
    image, valid = read_scene(scene_path, meta["bands"], meta["nodata"])
    _, height, width = image.shape
    tiles = []  # (y, x, input, validity) of windows with a valid pixel, row-major
    for y in origins(height, tile, overlap):
        for x in origins(width, tile, overlap):
            v = np.zeros((tile, tile), bool)
            v[:min(tile, height - y), :min(tile, width - x)] = valid[y:y + tile, x:x + tile]
            if v.any():
                t = np.full((image.shape[0], tile, tile), np.nan, np.float32)
                t[:, v] = image[:, y:y + tile, x:x + tile][:, v[:height - y, :width - x]]
                tiles.append((y, x, t, v))
    total = np.zeros((height, width), np.float32)
    weight = np.zeros((height, width), np.float32)
    w = window(tile)
    for start in range(0, len(tiles), batch_size):
        batch = tiles[start:start + batch_size]
        probs = session.run(["probability"], {"bands": np.stack([t for _, _, t, _ in batch])})[0][:, 0]
        for (y, x, _, v), p in zip(batch, probs):
            h, k = min(tile, height - y), min(tile, width - x)
            wv = w[:h, :k] * v[:h, :k]
            total[y:y + h, x:x + k] += p[:h, :k] * wv
            weight[y:y + h, x:x + k] += wv
    covered = weight > 0
    prob = np.divide(total, weight, out=np.zeros_like(total), where=covered)
    return np.where(covered, prob > meta["threshold"], 255).astype(np.uint8)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("scene")
    parser.add_argument("out")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    tifffile.imwrite(args.out, predict(args.model, args.scene, args.batch_size), compression="zlib")
