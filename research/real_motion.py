"""How a real scanner's speckle moves in its own moving-probe videos, beside the phantom's HQ and the shipped models
under the same measure (issue 27's temporal bar, checked against frames the project did not generate).

    usnst real-scanners --out data/real --height 256        # downloads and checks the archives into its cache
    python research/real_motion.py --models lq2hq_fast,lq2hq,lq2real --lags 2,8

The phantom's motion tables (`realism_table.py --motion-only`) score texture against the phantom's true motion. A
real video has no truth, so every row here uses `offline.temporal.sequence_texture_motion`, the measure of `usnst
metrics --video`: the anatomy's motion estimated (one rigid motion, `engines.tissue_motion`) from the input frames,
windows where the input is lit, frame pairs ``--lags`` apart. Real rows: each video is its own input, every frame of
its first ``--frames`` (cleaned of UI with one crop per cine, as `usnst real-scanners` cleans it, scaled to 256
rows; near-copies are kept here: they are the scanner's timing). Phantom rows: moving-probe sequences of held-out
scenes (seeds never trained on), LQ as input; HQ, and each model's output with the stream's fixed noise.

The videos run at 6–30 frames/s (each row says its rate) and the phantom at 25: compare rows at the same time apart
(e.g. a 24-fps video's pairs 8 frames apart with the phantom's 8, a 6-fps video's 2 with the phantom's 8).
A real hand-held probe also tilts out of plane and presses the tissue, which decorrelates its speckle; the phantom's
probe only slides in plane. The real rows are the behaviour a trainee knows, not a bar the phantom's rows must equal.
"""
import argparse
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from usnst.engines import beam_speckle, scanner_texture
from usnst.engines.base import EngineOptions
from usnst.engines.beam_speckle import RENEW_DEPTH_SHARE
from usnst.engines.registry import load_engine
from usnst.engines.tissue_motion import TissueMotion
from usnst.offline.real_scanners import (
    ARCHIVES,
    RECORDINGS,
    split_of,
    to_height,
)
from usnst.offline.realism import tissue_mask
from usnst.offline.screenshot import clean_cine
from usnst.offline.temporal import fine_texture, sequence_texture_motion
from usnst_io.media import is_image, iter_sequence, to_uint8
from usnst_stream.phantom import PhantomRenderer, probe

MOVING = ("butterfly-iq-nerve-preset", "butterfly-iq-ocular", "butterfly-iq-ocular-2", "clarius-ocular",
          "sonoque-phantom", "sonosite-turbo-heart")  # the recordings that are cines of a moving probe or heart


def real_sequences(cache: Path, frames: int):
    """(recording, file and frame rate, probe, split, grey frames at 256 rows) of every moving recording's videos."""
    for rec in RECORDINGS:
        if rec.id not in MOVING:
            continue
        archive = ARCHIVES[rec.archive]
        for name in rec.files:
            path = cache / f"{archive.package}-{archive.version}" / name
            if not path.is_file():
                raise SystemExit(f"{path} is missing: `usnst real-scanners --out data/real` fills the cache")
            if is_image(path):  # a still of the recording: nothing moves
                continue
            timed = list(islice(iter_sequence(path, colour=True), frames))
            if len(timed) < 2:
                continue
            rate = (len(timed) - 1) / max(timed[-1][0] - timed[0][0], 1e-6)
            cleaned = [to_height(r.image, 256) for r in clean_cine([f for _, f, _ in timed])]
            yield rec.id, f"{name} ({len(cleaned)} frames, {rate:.0f} fps)", rec.probe, split_of(rec), cleaned


def phantom_sequences(n: int, seeds: list[int], kind: str | None, length: int):
    """(LQ frames, HQ frames) of a moving probe per held-out scene, 256², 25 frames/s from the sweep's start."""
    for seed in seeds:
        for i in range(n):
            renderer = PhantomRenderer(256, 256, seed=seed + i, **({} if kind is None else {"geometry": probe(kind)}))
            samples = [renderer.render(k / 25) for k in range(length)]
            yield [to_uint8(s.lq) for s in samples], [to_uint8(s.hq) for s in samples]


def best_matches(inputs: list[np.ndarray], frames: list[np.ndarray], lag: int, flat_face: bool, window: int = 32,
                 search: int = 8) -> list[tuple[float, float]]:
    """Per 32-px tissue window of each pair ``lag`` apart: the fine texture's best correlation anywhere within
    ± ``search`` px (how much of the speckle survives the interval, whatever the motion estimate says), and how far
    (px) that best match lies from where the rigid motion estimated from ``inputs`` puts the window."""
    tracker = TissueMotion()
    to_reference = [tracker.update(np.asarray(f, np.float32) / 255.0, flat_face=flat_face).copy() for f in inputs]
    out = []
    for i in range(0, len(frames) - lag, lag):
        a, b, mask = fine_texture(frames[i]), fine_texture(frames[i + lag]), tissue_mask(inputs[i])
        forward = np.linalg.inv(to_reference[i + lag]) @ to_reference[i]  # a pixel of frame i → frame i + lag
        h, w = a.shape
        for y in range(search, h - window - search + 1, window // 2):
            for x in range(search, w - window - search + 1, window // 2):
                if mask[y:y + window, x:x + window].all() and a[y:y + window, x:x + window].std() > 1e-6:
                    region = b[y - search:y + window + search, x - search:x + window + search]
                    ncc = cv2.matchTemplate(region, a[y:y + window, x:x + window], cv2.TM_CCOEFF_NORMED)
                    py, px = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
                    centre = np.array([x + window / 2, y + window / 2, 1.0])
                    dx, dy = (forward @ centre)[:2] - centre[:2]
                    out.append((float(ncc.max()), float(np.hypot(px - search - dx, py - search - dy))))
    return out


def measured(inputs: list[list[np.ndarray]], outputs: list[list[np.ndarray]], lag: int, flat_face: bool) -> dict:
    """The texture motion of sequences merged (window-weighted); the median best match; where the speckle survives
    (best match > 0.5), the share of windows whose best match lies within 1.5 px of the estimated motion."""
    results = [sequence_texture_motion(i, o, lag, flat_face=flat_face) for i, o in zip(inputs, outputs)]
    n = sum(r["windows"] for r in results)
    mean = lambda key: sum(r[key] * r["windows"] for r in results if r["windows"]) / n if n else float("nan")
    best = np.array([m for i, o in zip(inputs, outputs) for m in best_matches(i, o, lag, flat_face)]).reshape(-1, 2)
    survives = best[:, 0] > 0.5
    return {"windows": n, "following": mean("following"), "after_motion": mean("after_motion"),
            "at_zero": mean("at_zero"), "motion_lost": sum(r["motion_lost"] for r in results),
            "best_match": float(np.median(best[:, 0])) if len(best) else float("nan"),
            "estimate_agrees": float(np.mean(best[survives, 1] <= 1.5)) if survives.any() else float("nan")}


def streamed(engine, sequences: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """Each sequence through ``engine`` as one stream (reset before it), grey uint8 in and out."""
    outputs = []
    for frames in sequences:
        engine.reset()
        outputs.append([to_uint8(engine.infer(f.astype(np.float32) / 255.0)) for f in frames])
    return outputs


def cell(r: dict) -> str:
    moved = (f"{r['windows']} | {r['following']:.0%} | {r['after_motion']:.2f} | {r['at_zero']:.2f}" if r["windows"]
             else "none moved | | |")
    return f"{moved} | {r['best_match']:.2f} | {r['estimate_agrees']:.0%} | {r['motion_lost']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "usnst" / "real-scanners",
                    help="where `usnst real-scanners` keeps the archives' files")
    ap.add_argument("--models", default="lq2hq_fast", help="comma-separated embedded names or checkpoints")
    ap.add_argument("--frames", type=int, default=96, help="frames read from the start of each real video")
    ap.add_argument("--lags", default="2,8", help="frames between the two of a pair, comma-separated")
    ap.add_argument("-n", type=int, default=6, help="phantom scenes per seed")
    ap.add_argument("--seeds", default="50000,60000", help="first scene seeds of the phantom rows (held out)")
    ap.add_argument("--length", type=int, default=33, help="frames per phantom sequence")
    ap.add_argument("--probe", choices=("linear", "curvilinear", "phased", "trapezoid"),
                    help="the phantom's probe view (default: its original sector)")
    ap.add_argument("--real-only", action="store_true", help="only the real videos' rows (no phantom, no model)")
    ap.add_argument("--on-real", action="store_true",
                    help="also each model run on the real videos themselves (every video as a stream, fixed noise): "
                         "its grain beside the video's own speckle, under the same motion")
    ap.add_argument("--fixed-renewal-too", action="store_true",
                    help="also each staged model renewing as a hand-held scanner does whatever its input shows (stops "
                         "41-51)")
    ap.add_argument("--kept-grain-too", action="store_true",
                    help="also each staged model with its scatterers never renewed (before stop 41; "
                         "a real texture's squares: before stop 42)")
    ap.add_argument("--texture-cycles", default="",
                    help="--on-real: also each real-texture model with its squares' cycle and fading share set to "
                         "each LIFE/FADE pair, comma-separated (e.g. 0.5/0.5,0.25/0.25: how the shipped one was "
                         "chosen)")
    args = ap.parse_args()
    shipped = beam_speckle.SQUARE_LIFE, scanner_texture.FADE_SHARE
    cycles = [tuple(float(x) for x in pair.split("/")) for pair in args.texture_cycles.split(",") if pair]
    if not all(len(c) == 2 and 0 < c[0] <= 16 and 0 < c[1] <= 1 for c in cycles):
        raise SystemExit(f"--texture-cycles {args.texture_cycles}: LIFE/FADE pairs, a cycle in (0, 16], a fading "
                         "share in (0, 1]")
    lags = [int(x) for x in args.lags.split(",")]
    if not all(1 <= lag < min(args.frames, args.length) for lag in lags):
        raise SystemExit(f"--lags {args.lags}: each needs 1 ≤ lag < --frames and --length")

    real = list(real_sequences(args.cache, args.frames))
    seeds = [int(s) for s in args.seeds.split(",")]
    phantom = [] if args.real_only else list(phantom_sequences(args.n, seeds, args.probe, args.length))
    lq = [p[0] for p in phantom]
    rows = [(f"real ({split})", f"{rec}: {name}", kind, [frames], [frames])
            for rec, name, kind, split, frames in real]
    linear = [r[4] for r in real if r[2] == "linear"]
    rows.append(("real", "all linear-array videos", "linear", linear, linear))
    view = args.probe or "sector"
    if not args.real_only:
        label = f"HQ, {len(phantom)} held-out scenes × {args.length} frames, 25 fps"
        rows.append(("phantom", label, view, lq, [p[1] for p in phantom]))
        rows.append(("phantom", "LQ (the input)", view, lq, lq))
    for name in [] if args.real_only else args.models.split(","):
        engine = load_engine(name, "torch", EngineOptions(noise="fixed", seed=0))
        rows.append(("phantom", f"{name}, noise fixed", view, lq, streamed(engine, lq)))
        if args.fixed_renewal_too and hasattr(engine, "stage"):
            engine.stage.renew = RENEW_DEPTH_SHARE  # kept through resets: the stage is rebuilt with its own renewal
            rows.append(("phantom", f"{name}, noise fixed, fixed renewal", view, lq, streamed(engine, lq)))
            engine.stage.renew = None
        if args.kept_grain_too and hasattr(engine, "stage"):
            engine.stage.renew = 0
            rows.append(("phantom", f"{name}, noise fixed, scatterers kept", view, lq, streamed(engine, lq)))
    for name in args.models.split(",") if args.on_real else []:
        engine = load_engine(name, "torch", EngineOptions(noise="fixed", seed=0))
        staged = hasattr(engine, "stage")
        rules = [(None, "")] + [(RENEW_DEPTH_SHARE, ", fixed renewal")] * (args.fixed_renewal_too and staged) + [
            (0, ", scatterers kept")] * (args.kept_grain_too and staged)
        for renew, what in rules:
            if staged:  # kept through resets: the stage is rebuilt with its own renewal
                engine.stage.renew = renew  # 0: the scatterers (or squares) never renewed, as before stop 41 (42)
            label_of = f"{name}{what} on"
            for rec, label, kind, split, frames in real:
                rows.append((f"real ({split}) in", f"{label_of} {rec}: {label}", kind, [frames],
                             streamed(engine, [frames])))
        if cycles and getattr(getattr(engine, "stage", None), "texture", None) is not None:
            engine.stage.renew = None
            for life, fade in cycles:  # how the shipped cycle was chosen (lq2real card)
                beam_speckle.SQUARE_LIFE, scanner_texture.FADE_SHARE = life, fade
                for rec, label, kind, split, frames in real:
                    rows.append((f"real ({split}) in", f"{name}, cycle {life:g} / fade {fade:g} on {rec}: {label}",
                                 kind, [frames], streamed(engine, [frames])))
            beam_speckle.SQUARE_LIFE, scanner_texture.FADE_SHARE = shipped
    for lag in lags:
        print(f"\ntexture motion, pairs {lag} frames apart; the anatomy's motion estimated from the input (rigid); "
              "32-px windows the input lights whose anatomy moved ≥ 1.5 px; best match: median over tissue windows "
              "of the texture's best correlation within ± 8 px, whatever the estimate; estimate agrees: where that "
              "best match is > 0.5, the share of windows where it lies within 1.5 px of the estimated motion")
        print("| domain | sequence | probe | windows | follows the anatomy | correlation after motion | "
              "at zero shift | best match | estimate agrees | estimate lost |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for domain, label, kind, inputs, outputs in rows:
            flat_face = kind in ("linear", "trapezoid")  # as the stage fits such a view
            print(f"| {domain} | {label} | {kind} | {cell(measured(inputs, outputs, lag, flat_face))} |", flush=True)


if __name__ == "__main__":
    main()
