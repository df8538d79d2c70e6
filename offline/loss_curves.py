"""Loss curves of an optimisation, as CSV and as a small PNG plot (OpenCV, no plotting library needed)."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from usnst_io.media import write_png

_COLOURS = {"total": (40, 40, 40), "content": (200, 90, 30), "style": (40, 60, 220)}  # BGR


def write_csv(losses: list[tuple[float, float, float]], path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["iteration", "total", "content", "style"])
        for i, (t, c, s) in enumerate(losses):
            w.writerow([i, f"{t:.6g}", f"{c:.6g}", f"{s:.6g}"])


def plot(losses: list[tuple[float, float, float]], path: str | Path, width: int = 640, height: int = 360) -> None:
    """log10(loss) against iteration for the total, content and style terms."""
    img = np.full((height, width, 3), 255, np.uint8)
    margin = 50
    if losses:
        data = np.log10(np.maximum(np.asarray(losses, np.float64), 1e-12))
        lo, hi = float(data.min()), float(data.max())
        hi = hi if hi > lo else lo + 1
        n = max(len(losses) - 1, 1)
        xs = margin + np.arange(len(losses)) / n * (width - 2 * margin)
        for col, name in enumerate(("total", "content", "style")):
            ys = height - margin - (data[:, col] - lo) / (hi - lo) * (height - 2 * margin)
            pts = np.stack([xs, ys], 1).astype(np.int32)
            cv2.polylines(img, [pts], False, _COLOURS[name], 1, cv2.LINE_AA)
            cv2.putText(img, name, (width - margin - 60, 20 + 16 * col), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _COLOURS[name], 1)
        cv2.putText(img, f"log10 loss {hi:.1f}", (4, margin - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cv2.putText(img, f"{lo:.1f}", (4, height - margin), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cv2.putText(img, f"iteration 0 .. {len(losses) - 1}", (margin, height - 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1)
    cv2.rectangle(img, (margin, margin), (width - margin, height - margin), (160, 160, 160), 1)
    write_png(path, img)
