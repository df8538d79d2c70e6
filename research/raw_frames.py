"""Real scanners' frames as they left the scanner, UI and all: does the beam-speckle stage find the imaging view?

The stage fits the view from the frame's lit pixels, and a display draws labels, depth scales, orientation marks and
brightness bars beside it. `usnst real-scanners` frames are cleaned of that UI (``offline.screenshot``); a stream is
not. For each recording's distinct frames (up to ``--per-file`` of each file, every view of a split screen), this
fits the view on the raw screen's grey and scores it against the imaging region the screenshot cleaner finds there
(``clean_screenshot``: texture-scored pieces, bars and legends cut — its own detector, not a truth): fitted or
refused, and the fitted view's IoU with that region. Domain: real scanner frames (8 makers, 17 recordings).

    python research/raw_frames.py --cache ~/.cache/usnst/real-scanners
    python research/raw_frames.py --stage-at 0e9a446     # the stage's code before marks were set aside (stop 48)
"""
import argparse
import itertools
from pathlib import Path

import cv2
import numpy as np
from engine_ratio import stage_at

from usnst.engines import beam_speckle
from usnst.offline.real_scanners import (
    ARCHIVES,
    RECORDINGS,
    distinct,
    extract,
    obtain,
    read_frames,
    views_of,
)
from usnst.offline.screenshot import clean_screenshot

FIT_AGREES = 0.9  # IoU with the cleaner's region: the view it found


def reference_region(screen: np.ndarray) -> np.ndarray:
    """The cleaner's imaging region in the screen's own pixels."""
    result = clean_screenshot(screen)
    top, left, h, w = result.box
    region = np.zeros(screen.shape[:2], bool)
    region[top:top + h, left:left + w] = result.region
    return region


def grey(screen: np.ndarray) -> np.ndarray:
    return (screen if screen.ndim == 2 else cv2.cvtColor(screen, cv2.COLOR_RGB2GRAY)).astype(np.float32) / 255.0


def score(module, frame: np.ndarray, region: np.ndarray) -> float | None:
    """IoU of the fitted view with ``region``, or None when the fit is refused."""
    try:
        view = module.fit_fan(frame)
    except module.NoFan:
        return None
    inside = view.polar(frame.shape, 2, 2)[2] <= 0
    return float((inside & region).sum() / max((inside | region).sum(), 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=str(Path.home() / ".cache/usnst/real-scanners"))
    ap.add_argument("--per-file", type=int, default=4)
    ap.add_argument("--stage-at", default=None, metavar="COMMIT", help="also the stage's fit as of this commit")
    args = ap.parse_args()
    stages = {"this code": beam_speckle}
    if args.stage_at:
        stages[args.stage_at] = stage_at(args.stage_at)
    cache = Path(args.cache)
    paths = {name: obtain(archive, cache) for name, archive in ARCHIVES.items()}
    print("| recording | probe | frames | " + " | ".join(f"{s}: fitted, IoU ≥ {FIT_AGREES} (median IoU)"
                                                            for s in stages) + " |")
    print("|---|---|---|" + "---|" * len(stages))
    totals = {s: [0, 0] for s in stages}
    count = 0
    for rec in RECORDINGS:
        folder = extract(ARCHIVES[rec.archive], paths[rec.archive], rec.files, cache)
        scores = {s: [] for s in stages}
        n = 0
        for name in rec.files:
            for screen in itertools.islice(distinct(read_frames(folder / name)), args.per_file):
                for view in views_of(screen, rec.views):
                    try:
                        region = reference_region(view)
                    except ValueError:
                        continue
                    n += 1
                    for s, module in stages.items():
                        scores[s].append(score(module, grey(view), region))
        count += n
        cells = []
        for s in stages:
            fitted = [x for x in scores[s] if x is not None]
            agree = sum(x >= FIT_AGREES for x in fitted)
            totals[s][0] += len(fitted)
            totals[s][1] += agree
            cells.append(f"{len(fitted)}, {agree} ({np.median(fitted):.2f})" if fitted else "0, 0")
        print(f"| {rec.id} | {rec.probe} | {n} | " + " | ".join(cells) + " |", flush=True)
    print(f"| all | | {count} | " + " | ".join(f"{f}, {a}" for f, a in totals.values()) + " |")


if __name__ == "__main__":
    main()
