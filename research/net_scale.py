"""The net's scale for large frames: does a net trained at a multiple of its scale keep the anatomy better there?
(issue 27 item 7: at 1000×1386 every shipped LQ→HQ model scores SSIM below the identity; docs/lab/lq2hq_fast.md)

A staged model resamples a frame so that its beams are ``net_depth_px`` long, the length it was trained at, and
forms the grain at the frame's own size. At 1000×1386 that is 4.5× smaller: the anatomy comes from the input shrunk.

    usnst phantom --out data/large_train -n 160 --size 1000x1386 --seed 7000 --settings varied
    python research/net_scale.py resample --model lq2hq_fast --scale 2 data/large_train data/large_down2
    usnst train realism --data data/large_down2 --init engines/default_models/lq2hq_fast.pt --loss mse=1 --lr 5e-4 \\
        --arch fast --channels 64 --blocks 8 --steps 3000 --val-every 3000 --out runs/scale2/model.pt
    usnst speckle --model runs/scale2/model.pt --triptychs data/realism_default --sample-mm 0.18309859 --detail 0.7 \\
        --fit-level --out runs/scale2/staged.pt
    python research/net_scale.py evaluate --model runs/scale2/staged.pt --scale 2

``resample``: each triptych shrunk as the engine shrinks its input (by area, to beams ``scale`` × the model's
``net_depth_px``; labels nearest). ``evaluate``: SSIM and low-passed SSIM to HQ at the given size on validation
scenes (seeds 70000… and 100000…, default acquisition, frame noise), the model run with its beams at ``scale`` × its
declared length; ``--contrast`` scales the grain (the stage's contrast) to show what dimming it buys.
"""
import argparse
import dataclasses
from pathlib import Path

import cv2
import numpy as np
from realism_table import scenes

from usnst.engines.base import EngineOptions
from usnst.engines.beam_speckle import fit_fan
from usnst.engines.registry import load_engine
from usnst.offline.metrics import ssim
from usnst.offline.realism import lowpass_ssim
from usnst_io.media import to_float, to_uint8


def resample(model: str, scale: float, src: Path, dst: Path) -> None:
    depth = load_engine(model, "onnxruntime").stage.config.net_depth_px * scale
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.png")):
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        w = image.shape[1] // 3
        lq, hq, seg = image[:, :w], image[:, w:2 * w], image[:, 2 * w:]
        shrink = fit_fan(lq.astype(np.float32) / 255.0).depth_px / depth
        size = (max(8, round(w / shrink)), max(8, round(image.shape[0] / shrink)))
        panels = [cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in (lq, hq)]
        cv2.imwrite(str(dst / path.name), np.hstack(panels + [cv2.resize(seg, size, interpolation=cv2.INTER_NEAREST)]))
    print(f"{dst}: triptychs with beams of {depth:.0f} px")


def evaluate(model: str, scale: float, size: tuple[int, int], n: int, contrast: float) -> None:
    data = scenes(n, size, 70000) + scenes(n, size, 100000)
    mean = lambda f, pairs: float(np.mean([f(a, b) for a, b in pairs]))
    print(f"identity SSIM {mean(ssim, [(d[0], d[1]) for d in data]):.4f}, "
          f"oracle {mean(ssim, [(d[3], d[1]) for d in data]):.4f}")
    engine = load_engine(model, "torch", EngineOptions(noise="frame", seed=0))
    c = engine.stage.config
    engine.stage.config = dataclasses.replace(c, net_depth_px=c.net_depth_px * scale, contrast=c.contrast * contrast)
    outs = [to_uint8(engine.infer(to_float(d[0]))) for d in data]
    pairs = [(o, d[1]) for o, d in zip(outs, data)]
    print(f"{model} at {size[0]}x{size[1]}, beams {c.net_depth_px * scale:.0f} px, grain × {contrast}: "
          f"SSIM {mean(ssim, pairs):.4f}, low-passed SSIM {mean(lowpass_ssim, pairs):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("resample", help="large triptychs shrunk to a multiple of a model's net scale")
    r.add_argument("--model", default="lq2hq_fast")
    r.add_argument("--scale", type=float, default=2.0, help="beams this many times the model's net_depth_px")
    r.add_argument("src", type=Path)
    r.add_argument("dst", type=Path)
    e = sub.add_parser("evaluate", help="SSIM to HQ at a large size, the net at a multiple of its scale")
    e.add_argument("--model", default="lq2hq_fast")
    e.add_argument("--scale", type=float, default=1.0)
    e.add_argument("--size", default="1000x1386")
    e.add_argument("-n", type=int, default=4, help="scenes per validation seed")
    e.add_argument("--contrast", type=float, default=1.0)
    args = ap.parse_args()
    if not 0.25 <= args.scale <= 8:
        raise SystemExit("--scale: 0.25–8")
    if args.command == "resample":
        resample(args.model, args.scale, args.src, args.dst)
    else:
        if not 1 <= args.n <= 100 or not 0 < args.contrast <= 2:
            raise SystemExit("-n: 1–100; --contrast: (0, 2]")
        evaluate(args.model, args.scale, tuple(int(x) for x in args.size.split("x")), args.n, args.contrast)


if __name__ == "__main__":
    main()
