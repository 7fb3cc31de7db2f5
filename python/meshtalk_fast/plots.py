"""Pictures of results people would rather look at than read: training curves (PNG, via Pillow)."""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Tuple

__all__ = ["plot_training_curves"]

_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _series(log_path: str) -> Dict[str, List[Tuple[int, float]]]:
    series: Dict[str, List[Tuple[int, float]]] = {}
    offset, last_stage, last_step = 0, None, 0
    with open(log_path) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("stage") != last_stage:  # put stage 2 after stage 1 on one axis
                offset, last_stage = last_step, rec.get("stage")
            x = offset + rec["step"]
            last_step = max(last_step, x)
            keys = ["lve", "lve_static"]
            if rec.get("split") == "train":
                keys = ["total", "recon", "landmarks", "modality_crossing", "cross_entropy", "code_perplexity"]
            for k in keys:
                if k in rec and isinstance(rec[k], (int, float)) and rec[k] > 0:
                    name = f"s{rec['stage']} {rec.get('split')} {k}"
                    series.setdefault(name, []).append((x, float(rec[k])))
    return series


def plot_training_curves(log_path: str, png_path: str, size=(900, 520)) -> None:
    """Losses and validation metrics from a ``metrics.jsonl`` log, log-scaled y, one PNG."""
    from PIL import Image, ImageDraw

    if not os.path.isfile(log_path):
        raise FileNotFoundError(f"training log {log_path!r} does not exist")
    series = _series(log_path)
    W, H = size
    left, right, top, bottom = 70, 230, 20, 40
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    points = [p for s in series.values() for p in s]
    if not points:
        draw.text((left, top), "no logged values yet", fill="black")
        img.save(png_path)
        return
    xmax = max(1, max(x for x, _ in points))
    ylo = math.log10(min(y for _, y in points))
    yhi = math.log10(max(y for _, y in points))
    if yhi - ylo < 1e-6:
        ylo, yhi = ylo - 0.5, yhi + 0.5

    def to_px(x, y):
        px = left + (W - left - right) * x / xmax
        py = top + (H - top - bottom) * (1 - (math.log10(y) - ylo) / (yhi - ylo))
        return px, py

    draw.rectangle([left, top, W - right, H - bottom], outline="black")
    for e in range(math.floor(ylo), math.ceil(yhi) + 1):
        if ylo <= e <= yhi:
            _, py = to_px(0, 10 ** e)
            draw.line([left, py, W - right, py], fill=(225, 225, 225))
            draw.text((5, py - 6), f"1e{e}", fill="black")
    draw.text((left, H - bottom + 8), "0", fill="black")
    draw.text((W - right - 40, H - bottom + 8), f"{xmax} steps", fill="black")
    for i, (name, pts) in enumerate(sorted(series.items())):
        colour = _COLOURS[i % len(_COLOURS)]
        xy = [to_px(x, y) for x, y in pts]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for px, py in xy if len(xy) < 30 else []:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        draw.text((W - right + 10, top + 16 * i), name, fill=colour)
    img.save(png_path)
