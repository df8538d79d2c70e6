"""README's picture: one held-out phantom through each shipped model, beside its input and HQ, with the speckle zoomed.

Rows are tasks (LQ → HQ, Seg → HQ, HQ → a real scanner's look, LQ → a real scanner's look); each panel is the full frame over a nearest-neighbour zoom of
one tissue square (×5), so speckle grain and contrast can be compared by eye. Models missing from the embedded set are
skipped, so the figure can be made at any stage.

    python research/realism_figure.py --out docs/realism.png --real data/real/held_out/aloka-ssd4000-pelvis
"""
import argparse

import cv2
import numpy as np

from usnst.engines.base import EngineOptions
from usnst.engines.checkpoint import embedded_models
from usnst.engines.registry import load_engine
from usnst_io.media import read_stills, to_float, to_uint8, write_png
from usnst_stream.phantom import render_scene

ROWS = (  # (input panel, models, target panel)
    ("lq", ("lq2hq_fast", "lq2hq"), "hq"),
    ("seg", ("seg2hq",), "hq"),
    ("hq", ("hq2clinical",), "real"),
    ("lq", ("lq2real",), "real"),
)


def zoomed(image: np.ndarray, top: int, left: int, side: int, zoom: int = 5) -> np.ndarray:
    """The frame above a ×zoom nearest-neighbour enlargement of one side×side square (outlined in the frame)."""
    frame = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    cv2.rectangle(frame, (left, top), (left + side - 1, top + side - 1), (0, 200, 255), 1)
    crop = image[top:top + side, left:left + side]
    big = cv2.resize(crop, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    big = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
    width = max(frame.shape[1], big.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)))
    return np.concatenate([pad(frame), np.zeros((4, width, 3), np.uint8), pad(big)])


def labelled(panel: np.ndarray, text: str) -> np.ndarray:
    bar = np.zeros((22, panel.shape[1], 3), np.uint8)
    cv2.putText(bar, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, panel])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/realism.png")
    ap.add_argument("--seed", type=int, default=50000, help="scene seed (held out: never used in training)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--real", default="data/real/held_out/aloka-ssd4000-pelvis",
                    help="real scanner frames for the last two rows' target (`usnst real-scanners`; default: the "
                         "held-out curvilinear probe, the phantom's kind)")
    ap.add_argument("--real-index", type=int, default=1, help="which real frame (1: the Aloka's second view)")
    ap.add_argument("--zoom-at", default="0.6,0.5", help="centre of the zoomed square, as fractions of height,width")
    args = ap.parse_args()

    scene = render_scene(args.seed, 0, args.size, args.size)
    panels = {"lq": to_uint8(scene.lq), "hq": to_uint8(scene.hq), "seg": scene.seg.astype(np.uint8)}
    try:
        real = read_stills(args.real)[args.real_index]
        panels["real"] = cv2.resize(real, (args.size * real.shape[1] // real.shape[0], args.size))
    except (FileNotFoundError, IndexError):
        pass
    side = args.size // 5
    fy, fx = (float(v) for v in args.zoom_at.split(","))
    top, left = int(fy * args.size) - side // 2, int(fx * args.size) - side // 2
    rows = []
    for source, models, target in ROWS:
        names = [m for m in models if m in embedded_models()]
        if not names:
            continue
        row = [labelled(zoomed(panels[source], top, left, side), f"input: {source.upper()}")]
        for name in names:
            engine = load_engine(name, "torch", EngineOptions(noise="fixed", seed=0))
            row.append(labelled(zoomed(to_uint8(engine.infer(to_float(panels[source]))), top, left, side), name))
        if target in panels:
            t = panels[target]
            t_top = min(top, t.shape[0] - side)
            name = {"hq": "HQ", "real": "real scanner (held out)"}[target]
            row.append(labelled(zoomed(t, t_top, min(left, t.shape[1] - side), side), "target: " + name))
        height = max(p.shape[0] for p in row)
        row = [np.pad(p, ((0, height - p.shape[0]), (0, 6), (0, 0))) for p in row]
        rows.append(np.concatenate(row, axis=1))
    width = max(r.shape[1] for r in rows)
    figure = np.concatenate([np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0))) for r in rows])
    write_png(args.out, figure)  # BGR, as cv2 writes
    print(f"wrote {args.out} ({figure.shape[1]}x{figure.shape[0]})")


if __name__ == "__main__":
    main()
