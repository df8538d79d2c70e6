"""Cleaning clinical screenshots: keep the imaging sector, remove the scanner's UI around and on it.

Scanner screenshots carry text (patient, settings), rulers, calipers and grey/brightness bars around an imaging
sector (or rectangle), and everything outside that region is UI. Steps, each reported:

1. Brightness bars on either side are cut off (``crop_brightness_bar``, found by their ramp shape), with the dark
   gap next to them.
2. Flat UI graphics (``flat_ui``: header bands, colour and grey legends such as GE's "PWR" bars, side bars) are
   found by what speckle never does: a pixel equal to its horizontal neighbours, row after row. They are taken out
   before the region is looked for (a header band touching the sector used to join it) and cut from it after.
3. The imaging region: textured pixels (flat UI panels have none) are opened wide enough to erase text strokes
   and ruler ticks and joined by a closing; the blob with the most speckle (area × local standard deviation) and
   the well-textured pieces next to it (fluid or shadow bands can split an image) are merged, and their convex
   hull is the region. Everything outside it is set to black; a legend at the region's side cuts its columns off.
4. Overlays *inside* the region (calipers, markers, burnt-in text, Doppler box outlines) are thin and either
   coloured (RGB input), saturated white, or long straight axis-aligned lines (``box_lines``); they are inpainted
   from their surroundings.
5. The result is cropped to the region's bounding box.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from usnst.offline.datasets import crop_brightness_bar


@dataclass
class CleanResult:
    image: np.ndarray  # uint8 grayscale, cropped to the imaging region
    region: np.ndarray  # bool mask of the imaging region, same size as ``image``
    box: tuple[int, int, int, int]  # (top, left, height, width) of the crop in the original image
    report: dict = field(default_factory=dict)


def _luma(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def _bar_columns(img: np.ndarray) -> tuple[int, int, dict]:
    """The column range [lo, hi) left after cutting brightness bars on either side, and what was cut."""
    gray = _luma(img)
    left = crop_brightness_bar(gray)
    right = crop_brightness_bar(gray[:, ::-1])
    lo, hi = left.left, gray.shape[1] - right.left
    if hi <= lo:  # a 'bar' on both sides that meet: treat as no bars
        return 0, gray.shape[1], {"bars": []}
    bars = [("left", left.bar), ("right", right.bar)]
    return lo, hi, {"bars": [side for side, bar in bars if bar is not None],
                    "bar_columns_removed": lo + (gray.shape[1] - hi)}


FLAT_RUN = 20  # rows: a UI bar or band is at least this tall; speckle never repeats a pixel 3 wide for so long
# A screen draws a few UI elements over its image (pydicom's scans: 0–6); a scanner that smooths or scales its
# image up makes flat runs all over it (itk-pocus' Butterfly, Clarius and Sonoque videos: 80–300 per frame), and
# taking those for UI punched holes in the image.
MAX_UI_ELEMENTS = 12
UI_MARGIN = 6  # px around a flat UI element: its edge, where a 7×7 texture window still sees it


def flat_ui(img: np.ndarray) -> np.ndarray:
    """Bool mask of flat UI graphics: lit pixels equal (±1 grey level in every channel) to both horizontal
    neighbours, in vertical runs of at least ``FLAT_RUN`` rows — header bands, colour and grey legends (a ramp is
    constant along each row), side bars. Speckle is never flat three pixels wide for 20 rows (none found in
    pydicom's five ultrasound examples or the phantom), and black is not UI here."""
    a = img.astype(np.int16)
    a = a[..., None] if a.ndim == 2 else a
    flat = np.zeros(a.shape[:2], np.uint8)
    same = (np.abs(a[:, 1:-1] - a[:, :-2]).max(-1) <= 1) & (np.abs(a[:, 2:] - a[:, 1:-1]).max(-1) <= 1)
    flat[:, 1:-1] = same & (a[:, 1:-1].max(-1) > 8)
    flat = cv2.morphologyEx(flat, cv2.MORPH_OPEN, np.ones((FLAT_RUN, 1), np.uint8))
    return cv2.dilate(flat, np.ones((1, 3), np.uint8)).astype(bool)  # the run's neighbours are part of it


def screen_ui(img: np.ndarray) -> np.ndarray:
    """``flat_ui`` of a screen, unless more than ``MAX_UI_ELEMENTS`` of its flat runs lie in the image region found
    without them: then they are the image's own flat texture, and none is UI."""
    ui = flat_ui(img)
    if ui.any():
        gray = _luma(img)
        rough = imaging_region(gray, colour=coloured(img, gray > 8))
        if cv2.connectedComponents((ui & rough).astype(np.uint8), connectivity=8)[0] - 1 > MAX_UI_ELEMENTS:
            return np.zeros_like(ui)
    return ui


def box_lines(gray: np.ndarray, length: int = 40, contrast: int = 25) -> np.ndarray:
    """Bool mask of long straight horizontal and vertical lines 1–2 px thin that are brighter than the pixels two
    rows (columns) away on both sides: Doppler boxes, measurement frames, grid lines drawn by the scanner. Tissue
    interfaces are thicker, and neither perfectly straight nor axis-aligned for ``length`` px."""
    g = gray.astype(np.int16)
    mask = np.zeros(gray.shape, bool)
    for axis, kernel in ((0, np.ones((1, length), np.uint8)), (1, np.ones((length, 1), np.uint8))):
        side = np.maximum(np.roll(g, 2, axis), np.roll(g, -2, axis))
        ridge = ((g - side) > contrast).astype(np.uint8)
        bridge = np.ones((1, 5) if axis == 0 else (5, 1), np.uint8)  # a speckle grain brighter than the line
        ridge = cv2.morphologyEx(ridge, cv2.MORPH_CLOSE, bridge)
        mask |= cv2.morphologyEx(ridge, cv2.MORPH_OPEN, kernel).astype(bool) & (ridge > 0)
    return mask


def imaging_region(gray: np.ndarray, stroke: int = 9, ui: np.ndarray | None = None,
                   colour: np.ndarray | None = None) -> np.ndarray:
    """Bool mask of the imaging sector/rectangle: see the module docstring (step 3). ``ui``: flat UI pixels
    (``flat_ui``), ``colour``: overlay colour (``coloured``) — neither is texture of the image (an orientation
    marker's coloured disc beside the sector used to join it; Doppler flow inside it is restored by the hull)."""
    g = gray.astype(np.float32)
    local_std = np.sqrt(np.maximum(cv2.blur(g * g, (7, 7)) - cv2.blur(g, (7, 7)) ** 2, 0))
    lit = (gray > 8) & (local_std > 1.5)  # flat UI panels are lit but have no texture
    if colour is not None:
        lit &= ~cv2.dilate(colour.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # and antialiased rims
    if ui is not None and ui.any():  # ... except at their edges and text: keep a margin around them
        lit &= ~cv2.dilate(ui.astype(np.uint8), np.ones((2 * UI_MARGIN + 1,) * 2, np.uint8)).astype(bool)
    lit = lit.astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (stroke, stroke))
    body = cv2.morphologyEx(lit, cv2.MORPH_OPEN, kernel)  # text strokes and ticks are thinner than ``stroke``
    body = cv2.morphologyEx(body, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (25, 25)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(body, connectivity=8)
    if n <= 1:
        return np.zeros(gray.shape, bool)
    # Flat UI panels (header bands, buttons) can be as big as the image: score blobs by area × speckle texture.
    texture = np.bincount(labels.ravel(), weights=local_std.ravel(), minlength=n) / np.maximum(
        np.bincount(labels.ravel(), minlength=n), 1)
    score = stats[:, cv2.CC_STAT_AREA] * texture
    best = 1 + int(np.argmax(score[1:]))
    # Dark fluid or shadow bands can split one image into pieces: a well-textured piece whose bounding box lies
    # largely (≥ 30 %) inside the best blob's box is part of the same image (a header or button bar beside the
    # image overlaps it little or not at all; measured on pydicom's examples and the phantom: 0.40 vs ≤ 0.03).
    x, y, w, h = stats[best, :4]

    def inside(k):
        kx, ky, kw, kh = stats[k, :4]
        ox = max(0, min(x + w, kx + kw) - max(x, kx))
        oy = max(0, min(y + h, ky + kh) - max(y, ky))
        return ox * oy >= 0.3 * kw * kh

    pieces = [k for k in range(1, n) if k == best or (score[k] >= 0.1 * score[best] and inside(k))]
    blob = np.isin(labels, pieces).astype(np.uint8)
    contours, _ = cv2.findContours(blob, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    region = np.zeros_like(blob)
    # Sectors and rectangles are convex: the hull also restores dark tissue at their rim. (A curved-array image's
    # concave near edge is over-included; what lies there is usually black, and white text is caught in step 3.)
    cv2.fillPoly(region, [cv2.convexHull(np.concatenate(contours))], 1)
    return region.astype(bool)


def coloured(img: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Bool mask of overlay colour: B-mode is grey, or uniformly tinted by a palette, so colour well beyond the
    usual tint of the pixels ``where`` (Doppler flow, calipers, orientation markers) is not image. Grey input: none."""
    if img.ndim != 3:
        return np.zeros(img.shape, bool)
    spread = img.max(axis=2).astype(np.int16) - img.min(axis=2).astype(np.int16)
    usual = float(np.median(spread[where])) if where.any() else 0.0
    return spread > usual + 40


def cut_ui(region: np.ndarray, ui: np.ndarray) -> tuple[np.ndarray, int]:
    """The region without the flat UI elements it holds: an element near the region's left or right side (a
    legend over the image's edge) cuts off every column from that side to past the element (its labels sit above
    and below it); one elsewhere is taken out with a margin. Returns the region and the number of elements cut."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((ui & region).astype(np.uint8), connectivity=8)
    if n <= 1:
        return region, 0
    region = region.copy()
    xs = np.flatnonzero(region.any(axis=0))
    lo, hi = int(xs.min()), int(xs.max()) + 1
    side = max(8, (hi - lo) // 20)
    for k in range(1, n):
        x, y, w, h = (int(v) for v in stats[k, :4])
        if x - lo <= side:
            region[:, :x + w + UI_MARGIN] = False
        elif hi - (x + w) <= side:
            region[:, max(0, x - UI_MARGIN):] = False
        else:
            region[max(0, y - UI_MARGIN):y + h + UI_MARGIN, max(0, x - UI_MARGIN):x + w + UI_MARGIN] = False
    return region, n - 1


def overlay_mask(img: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Thin overlay pixels inside the region: coloured ones (RGB input), saturated white thin structures and long
    straight box lines."""
    gray = _luma(img)
    mask = np.zeros(gray.shape, bool)
    mask |= coloured(img, region)
    white = gray >= 250
    tophat = cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (7, 7)))
    mask |= white & (tophat > 60)  # thin and brighter than its surroundings: a line, a cross, a letter
    mask |= box_lines(gray)
    mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # their antialiased edges
    return mask & region


def clean_screenshot(img: np.ndarray, columns: tuple[int, int] | None = None,
                     region: np.ndarray | None = None) -> CleanResult:
    """Gray (H, W) or RGB (H, W, 3) uint8 screenshot → cleaned grayscale imaging region, with a report. ``columns``
    and ``region`` (within those columns) impose what a cine's frames share instead of finding it per frame."""
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 grayscale or RGB image, got {img.dtype} {img.shape}")
    total = img.shape[0] * img.shape[1]
    lo, hi, report = _bar_columns(img) if columns is None else (*columns, {"bars": "as the cine's first frame"})
    img = img[:, lo:hi]
    gray = _luma(img)
    ui = screen_ui(img)
    region = imaging_region(gray, ui=ui, colour=coloured(img, gray > 8)) if region is None else region
    region, legends = cut_ui(region, ui)
    if not region.any():
        raise ValueError("no imaging region found (is the image empty?)")
    overlays = overlay_mask(img, region)
    cleaned = gray.copy()
    if overlays.any():
        cleaned = cv2.inpaint(cleaned, overlays.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    outside_lit = int(((gray > 8) & ~region).sum())
    cleaned[~region] = 0
    ys, xs = np.nonzero(region)
    top, left, bottom, right = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
    box = (int(top), int(left + lo), int(bottom - top), int(right - left))  # in the original image's coordinates
    report.update({"input_pixels": total, "region_fraction": float(region.mean()),
                   "ui_pixels_removed": outside_lit, "ui_elements_cut": legends,
                   "overlay_pixels_inpainted": int(overlays.sum()),
                   "crop": list(box)})
    return CleanResult(cleaned[top:bottom, left:right], region[top:bottom, left:right], box, report)


def clean_cine(frames: list[np.ndarray], voters: int = 30) -> list[CleanResult]:
    """A cine's frames cleaned with one region and one crop: the scanner's UI does not move between frames, so
    the region is the pixels that a majority of the per-frame detections include (its convex hull), and the bar
    cut is the first frame's. Per-frame detection gave 26 different crops over a 30-frame cine. At most ``voters``
    frames, evenly spread, vote: a 700-frame video would otherwise spend minutes agreeing on one region."""
    lo, hi, _ = _bar_columns(frames[0])
    cut = [f[:, lo:hi] for f in frames]
    sample = [cut[i] for i in np.unique(np.linspace(0, len(cut) - 1, min(voters, len(cut))).round().astype(int))]
    votes = np.mean([imaging_region(_luma(f), ui=screen_ui(f), colour=coloured(f, _luma(f) > 8)) for f in sample],
                    axis=0) >= 0.5
    if not votes.any():
        raise ValueError("no imaging region found in the cine")
    contours, _ = cv2.findContours(votes.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    region = np.zeros(votes.shape, np.uint8)
    cv2.fillPoly(region, [cv2.convexHull(max(contours, key=cv2.contourArea))], 1)
    return [clean_screenshot(f, (lo, hi), region.astype(bool)) for f in frames]


def clean_folder(inputs: str, out: str, overwrite: bool = False) -> dict:
    """Clean every screenshot of a folder/glob (images and DICOM, in colour where they have it) into PNGs under ``out``
    (same relative paths; a cine gives name_0000.png…), with ``cleaning.json`` listing what was removed. A folder
    that already holds files is refused unless ``overwrite``: cleaning never replaces what it did not just write."""
    import json
    from pathlib import Path

    from usnst_io.dicom import read_dicom
    from usnst_io.media import (
        DICOM_SUFFIXES,
        frame_png_paths,
        plan_batch,
        read_color,
        write_png,
    )

    items = plan_batch(inputs, out)
    if not overwrite and Path(out).is_dir() and any(p.is_file() for p in Path(out).rglob("*")):
        raise ValueError(f"{out} already holds files: choose an empty --out, or pass --overwrite to replace them")
    rows, failures = [], []
    for item in items:
        path, rel = item.input, item.rel
        try:
            if path.suffix.lower() in DICOM_SUFFIXES:
                frames = read_dicom(path, colour=True).frames  # colour finds calipers and Doppler overlays
            else:
                frames = [read_color(path)]
            targets = frame_png_paths(item.out_stem, len(frames))
            results = clean_cine(frames) if len(frames) > 1 else [clean_screenshot(frames[0])]
            for result, target in zip(results, targets):
                write_png(target, result.image)
                rows.append({"input": str(rel), "output": str(target.relative_to(out)), **result.report})
        except Exception as exc:  # one bad screenshot must not end the batch
            failures.append({"input": str(rel), "error": f"{exc.__class__.__name__}: {exc}"})
    summary = {"images": len(rows), "failures": failures, "rows": rows}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "cleaning.json").write_text(json.dumps(summary, indent=2))
    return summary
