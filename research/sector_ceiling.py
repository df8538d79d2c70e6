"""What would pass the whole-sector C2ST (issue 27 item 6)? The shipped stage adds log-domain grain to a low-passed
net output (``out = base + grain``); a scanner multiplies its scatterers by the tissue's echo amplitude *before*
the PSF, so a bright reflector keeps its own speckle-limited edge and anechoic fluid shows the dark, sparse grain
of the few echoes the display still shows. This table puts both ways of forming the grain on the same means — the
scene's ideal mean grey (HQ averaged over k scatterer fields), that mean blurred as the stage blurs the net, and a
net's own low-passed output — and scores each with realism_table's whole-sector C2ST (64-px patches anywhere in the
sector, against HQ of other scenes, split by image). Phantom domain: the "formed" rows use the phantom's own way of
forming HQ, so on the ideal mean they are a ceiling of the design, not evidence of realism.

    python research/sector_ceiling.py -n 40 --repeats 2

Measured (stop 35; 40 scenes, 2 classifiers; docs/lab/whole_sector.md): HQ floor 0.49; ideal mean + additive grain
0.80, + mean shown 0.88, blurred σ 1.5 0.96, formed 0.86; lq2hq_fast's net as is 0.91, bilateral 0.89, guided 0.91,
median 0.92. The blur of the anatomy decides; the net's own mean is already too soft for any filter of it.
"""
import argparse

import cv2
import numpy as np
from beam_speckle_ceiling import mean_grey
from realism_table import OTHER_SCENES, scenes, sector_c2st, sector_patches

from usnst.engines.base import EngineOptions
from usnst.engines.beam_speckle import BeamSpeckle, BeamSpeckleConfig, Fan
from usnst.engines.body_engine import TorchEagerEngine
from usnst.engines.checkpoint import load_checkpoint, resolve_model
from usnst_io.media import to_float, to_uint8


def polar_points(view, rays: int, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Every polar grid point's pixel (x, y): where a beam's sample lies on the screen."""
    ray, sample = np.meshgrid(np.arange(rays, dtype=np.float32), np.arange(samples, dtype=np.float32))
    if isinstance(view, Fan):
        theta = view.theta0 + ray / (rays - 1) * (view.theta1 - view.theta0)
        r = view.r0 + sample / (samples - 1) * (view.r1 - view.r0)
        return (view.apex_x + r * np.sin(theta)).astype(np.float32), (view.apex_y + r * np.cos(theta)).astype(np.float32)
    return (view.x0 + ray / (rays - 1) * (view.x1 - view.x0)).astype(np.float32), \
        (view.y0 + sample / (samples - 1) * (view.y1 - view.y0)).astype(np.float32)


def formed(mean: np.ndarray, frame: np.ndarray, rng, config: BeamSpeckleConfig = BeamSpeckleConfig(),
           under: bool = True) -> np.ndarray:
    """Speckle formed as a scanner forms it: the mean grey taken to the polar grid and to an echo amplitude
    (exp(level / contrast), the level the display's clipping leaves showing ``mean`` when ``under``), times complex
    scatterers, blurred by the PSF, log-compressed, scan-converted."""
    stage = BeamSpeckle(config)
    maps = stage._maps_for(frame)
    c = config.contrast
    plain = stage.grain(maps, [rng.standard_normal(stage.plane_shape[2:]).astype(np.float32) for _ in range(2)])
    level = stage.level_under_grain(mean, plain) if under else mean
    xs, ys = polar_points(stage.fan, config.rays, config.samples)
    level_polar = cv2.remap(level.astype(np.float32), xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    amplitude = np.exp(level_polar / c)
    re, im = (rng.standard_normal(level_polar.shape).astype(np.float32) * amplitude for _ in range(2))
    shown = c * stage.log_envelope(re, im)
    out = cv2.remap(shown, *maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return (np.clip(out, 0, 1) * stage._inside).astype(np.float32)


def bilateral(image: np.ndarray) -> np.ndarray:
    return cv2.bilateralFilter(image.astype(np.float32), 7, 0.08, 2.0)


def guided(image: np.ndarray, radius: int = 2, eps: float = 4e-3) -> np.ndarray:
    """He et al.'s guided filter with the image as its own guide: smooths where the local variance is below eps,
    keeps edges where it is above."""
    box = lambda x: cv2.boxFilter(x, -1, (2 * radius + 1,) * 2, borderType=cv2.BORDER_REFLECT)
    image = image.astype(np.float32)
    mean, var = box(image), box(image * image) - box(image) ** 2
    a = var / (var + eps)
    b = mean - a * mean
    return box(a) * image + box(b)


def median(image: np.ndarray) -> np.ndarray:
    return cv2.medianBlur(image.astype(np.float32), 5)


def additive(mean: np.ndarray, frame: np.ndarray, rng, mean_shown: bool = False) -> np.ndarray:
    stage = BeamSpeckle(BeamSpeckleConfig(base_sigma=0.0, mean_shown=mean_shown))
    planes = [rng.standard_normal(stage.plane_shape[2:]).astype(np.float32) for _ in range(2)]
    return stage.apply(mean, frame, planes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=50000)
    ap.add_argument("-k", type=int, default=16, help="scatterer fields averaged for the ideal mean grey")
    ap.add_argument("--repeats", type=int, default=2, help="classifiers per C2ST")
    ap.add_argument("--model", default="lq2hq_fast", help="the net whose low-passed output the net rows use")
    ap.add_argument("--rows", default="", help="only rows whose name contains one of these comma-separated words")
    args = ap.parse_args()
    data = scenes(args.n, args.size, args.seed)
    other = scenes(args.n, args.size, args.seed + OTHER_SCENES)
    target = sector_patches([d[1] for d in other], [d[2] for d in other])
    frames, segs = [to_float(d[0]) for d in data], [d[2] for d in data]
    ideal = [mean_grey(args.seed, i, args.size, args.k) for i in range(args.n)]
    blur = BeamSpeckle(BeamSpeckleConfig(base_sigma=1.5))
    blurred = [blur.base(m, f > 0) for m, f in zip(ideal, frames)]
    net, _ = load_checkpoint(resolve_model(args.model))
    run = TorchEagerEngine(net, EngineOptions(seed=0)).infer
    net_out = [run(f) for f in frames]
    net_base = [blur.base(m, f > 0) for m, f in zip(net_out, frames)]
    rows = {
        "HQ of the same scenes (the floor)": lambda: [d[1] for d in data],
        "ideal mean, additive grain": lambda: [additive(m, f, rng) for m, f in zip(ideal, frames)],
        "ideal mean, additive grain, mean shown": lambda: [additive(m, f, rng, True) for m, f in zip(ideal, frames)],
        "ideal mean blurred σ 1.5, additive grain": lambda: [additive(m, f, rng) for m, f in zip(blurred, frames)],
        "ideal mean, formed": lambda: [formed(m, f, rng) for m, f in zip(ideal, frames)],
        "ideal mean blurred σ 1.5, formed": lambda: [formed(m, f, rng) for m, f in zip(blurred, frames)],
        f"{args.model} low-passed σ 1.5, additive grain": lambda: [additive(m, f, rng) for m, f in zip(net_base, frames)],
        f"{args.model} low-passed σ 1.5, formed": lambda: [formed(m, f, rng) for m, f in zip(net_base, frames)],
        f"{args.model} as is, additive grain": lambda: [additive(m, f, rng) for m, f in zip(net_out, frames)],
        f"{args.model} bilateral, additive grain": lambda: [additive(bilateral(m), f, rng) for m, f in zip(net_out, frames)],
        f"{args.model} guided, additive grain": lambda: [additive(guided(m), f, rng) for m, f in zip(net_out, frames)],
        f"{args.model} median 5, additive grain": lambda: [additive(median(m), f, rng) for m, f in zip(net_out, frames)],
    }
    words = [w for w in args.rows.split(",") if w]
    print(f"whole-sector C2ST, {args.n} scenes from seed {args.seed} against HQ of seeds +{OTHER_SCENES}, "
          f"{args.size}², mean ± s.e. of {args.repeats} classifiers\n| frames | C2ST |\n|---|---|")
    for name, make in rows.items():
        if words and not any(w in name for w in words):
            continue
        rng = np.random.default_rng(0)
        images = [to_uint8(x) if x.dtype != np.uint8 else x for x in make()]
        mean, se = sector_c2st(images, segs, target, args.repeats)
        print(f"| {name} | {mean:.2f} ± {se:.2f} |", flush=True)


if __name__ == "__main__":
    main()
