"""The thesis dataset layouts: triptychs, clinical screenshots, and the crops and resizes training uses.

Simulated set: one PNG per sample with three equal panels side by side, LQ | HQ | segmentation
(1000×1386 each in the thesis; ``usnst phantom`` writes the same layout at any size). Clinical set: scanner
screenshots with a brightness bar on the left. Files are found and read by usnst_io.media.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from usnst_io.media import image_files, read_gray


@dataclass
class Triptych:
    name: str
    lq: np.ndarray  # uint8 (H, W)
    hq: np.ndarray  # uint8 (H, W)
    seg: np.ndarray  # uint8 (H, W) labels


def split_triptych(img: np.ndarray, name: str = "") -> Triptych:
    """Cut a side-by-side LQ | HQ | seg image into its three panels."""
    if img.ndim != 2 or img.shape[1] % 3:
        raise ValueError(f"{name or 'image'}: a triptych is a grayscale image whose width divides by 3, got {img.shape}")
    w = img.shape[1] // 3
    return Triptych(name, img[:, :w], img[:, w:2 * w], img[:, 2 * w:])


def read_triptych_folder(folder: str | Path) -> list[Triptych]:
    return [split_triptych(read_gray(p), p.name) for p in image_files(folder)]


def centre_crop(img: np.ndarray, size: int = 1000) -> np.ndarray:
    """The central size×size square (the thesis cropped 1000×1386 panels to 1000×1000); smaller sides are kept."""
    h, w = img.shape[:2]
    ch, cw = min(size, h), min(size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top:top + ch, left:left + cw]


def resize_longest(img: np.ndarray, size: int, labels: bool = False) -> np.ndarray:
    """Scale so the longer side is ``size`` (nearest for label maps, area/linear for images)."""
    h, w = img.shape[:2]
    scale = size / max(h, w)
    if scale == 1:
        return img
    dsize = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_NEAREST if labels else (cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return cv2.resize(img, dsize, interpolation=interp)


@dataclass
class BarCrop:
    image: np.ndarray
    bar: tuple[int, int] | None  # first and last column of the detected brightness bar
    left: int  # columns removed from the left


def _is_ramp(col: np.ndarray, min_range: float = 60.0, min_rows: float = 0.2) -> bool:
    """A brightness bar's column: over the rows where it is lit, it runs monotonically through a wide range of
    grey levels (its total variation is about its range), unlike speckle, whose variation is many times its range."""
    lit = np.flatnonzero(col > 8)
    if lit.size < min_rows * col.size:
        return False
    seg = col[lit[0]:lit[-1] + 1].astype(np.float64)
    span = seg.max() - seg.min()
    return span >= min_range and np.abs(np.diff(seg)).sum() <= 1.3 * span


def crop_brightness_bar(img: np.ndarray, search_fraction: float = 0.25) -> BarCrop:
    """Detect the vertical grey-scale bar that scanner screenshots show on the left, and cut it off together with
    the dark gap after it. Nothing is cut when no bar is found. The bar is found from its shape (a smooth ramp),
    not from a fixed pixel count, so screenshots of other sizes and scanners work."""
    w = img.shape[1]
    ramp = [c for c in range(max(1, int(w * search_fraction))) if _is_ramp(img[:, c])]
    if not ramp:
        return BarCrop(img, None, 0)
    first = ramp[0]
    last = first
    while last + 1 < w and (last + 1 in ramp or _is_ramp(img[:, last + 1])):
        last += 1
    left = last + 1
    while left < w and img[:, left].max() < 10:  # the empty gap between bar and image
        left += 1
    return BarCrop(img[:, left:], (first, last), left)


def read_clinical(path: str | Path, crop: int | None = None) -> np.ndarray:
    """A clinical screenshot as grayscale with its brightness bar removed, optionally centre-cropped."""
    img = crop_brightness_bar(read_gray(path)).image
    return centre_crop(img, crop) if crop else img
