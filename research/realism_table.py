"""The realism report of models on held-out phantoms, next to the identity (LQ) and the oracle (HQ of the same scene
with an independent scatterer field: the best a model whose speckle is not copied from HQ can do).

Scenes come from seeds never used for training (default 50000…), rendered here so the oracle can be re-rendered;
``--outside`` adds the low-passed SSIM to the input on acquisition settings beyond the training ranges (a model that
invents structure loses it there), ``--flicker`` the moving-probe flicker ratio and the paused-probe output change,
``--invented`` the invented-structure table (phantom scenes against their LQ input beside HQ-vs-LQ, and another
formation: a linear array's uniform speckle with one cyst, ``phantom.uniform_cyst_frame``), ``--motion`` whether
the fine texture moves with the anatomy on moving-probe sequences (offline.temporal.texture_motion
with the phantom's true motion; HQ and the LQ input beside every model; ``--motion-only`` skips the still report),
``--probes-only`` the report per probe kind (curvilinear, phased, linear, trapezoid phantom views: speckle FWHM and
Nakagami m against that probe's HQ with and without the frames' poses, C2ST with them), ``--sector-only`` the
whole-sector C2ST (64-px patches anywhere in the sector — fluid, skull, boundaries, near field
— of the models' outputs against HQ of other scenes, split by image; HQ of the same scenes beside them is the floor).

    python research/realism_table.py --models lq2hq,lq2hq_fast,runs/x/model.pt -n 24 --size 256 --outside --flicker
    python research/realism_table.py --task seg2hq --models seg2hq -n 24
    python research/realism_table.py --models a.pt,b.pt -n 24 --seed 1000 --settings varied   # calibration split
    python research/realism_table.py --models a.pt --seeds 70000,100000 --repeats 4 --no-baselines   # a screen
    python research/realism_table.py --models lq2hq,lq2hq_fast --seeds 50000,60000 --motion-only --noise fixed,frame

An unpaired task (hq2clinical) has no HQ of the same scene: its still table is research/real_table.py (against
held-out real scanner frames, split by recording); here it takes the invented-structure and motion tables only.
"""
import argparse
import json

import numpy as np

from usnst.engines.base import EngineOptions
from usnst.engines.beam_speckle import RENEW_DEPTH_SHARE, BeamSpeckle
from usnst.engines.registry import load_engine
from usnst.offline.realism import (
    LOWPASS_SIGMA,
    C2STBudget,
    c2st,
    invented_structure,
    lowpass_ssim,
    realism_report,
    tissue_mask,
    tissue_patches,
)
from usnst.offline.tasks import task
from usnst.offline.temporal import flicker, merge_texture_motion, texture_motion
from usnst_io.media import to_float, to_uint8
from usnst_stream.phantom import (
    ANATOMIES,
    FORMATIONS,
    PROBES,
    PhantomRenderer,
    probe,
    render_scene,
    uniform_cyst_frame,
)

SOURCE_INDEX = {"lq": 0, "hq": 1, "seg": 2}


LOOK = {"formation": "gaussian", "anatomy": "fetal"}  # how every table's phantoms are formed (--formation, --anatomy)


def frame_size(text: str) -> tuple[int, int]:
    """--size: "256" (square) or "1000x1386" (height × width)."""
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def scenes(n: int, size, seed: int, settings: str = "default", probe_kind: str | None = None):
    """(LQ, HQ, seg, oracle HQ) per scene, exactly as `usnst phantom --settings --probe` renders scene seed + i;
    ``size``: a side, or (height, width)."""
    h, w = (size, size) if isinstance(size, int) else size
    out = []
    for i in range(n):
        s = render_scene(seed + i, i, h, w, settings, probe_kind=probe_kind, **LOOK)
        o = render_scene(seed + i, i, h, w, settings, speckle_seed=seed + i + 1, probe_kind=probe_kind, **LOOK)
        out.append((to_uint8(s.lq), to_uint8(s.hq), s.seg.astype(np.uint8), to_uint8(o.hq)))
    return out


MOTION_FPS, MOTION_LAG = 25, 8  # frames 8 apart at 25 fps: 3–5 px of anatomy motion at 256² (--lag: another span)


def moving_probes(n: int, size: int, seeds: list[int], kind: str | None = None, lag: int = MOTION_LAG):
    """Per scene and start (t = 0 s and 5.5 s: the sweep's fastest moments, one each way): the LQ and HQ frames of
    a moving probe, the true motion from the first frame to the last, the lit windows of the first HQ, and each
    frame's pose as the simulator sends it."""
    out = []
    for seed in seeds:
        for i in range(n):
            renderer = PhantomRenderer(size, size, seed=seed + i, **LOOK,
                                       **({} if kind is None else {"geometry": probe(kind)}))
            for t0 in (0.0, 5.5):
                frames = [renderer.render(t0 + k / MOTION_FPS) for k in range(lag + 1)]
                times = [t0 + k / MOTION_FPS for k in range(lag + 1)]
                out.append(([f.lq for f in frames], [f.hq for f in frames],
                            renderer.displacement(t0, times[-1]),
                            tissue_mask(to_uint8(frames[0].hq), None if kind is None else frames[0].seg),
                            [renderer.image_to_world(t) for t in times]))
    return out


def motion_row(name: str, sequences, run=None, source: str = "lq") -> dict:
    """The texture motion of HQ (run None and name 'HQ'), the input (name 'LQ') or a model run over each
    sequence's ``source`` frames (lq, or hq for a model of HQ frames) in order from a fresh stream (its first and
    last outputs compared); ``run(frame, pose)``."""
    results = []
    for lq, hq, motion, mask, poses in sequences:
        if run is None:
            frames = hq if name.startswith("HQ") else lq
        else:
            run.reset()
            frames = [run(f, p) for f, p in zip(hq if source == "hq" else lq, poses)]
        results.append(texture_motion(frames[0] * 255, frames[-1] * 255, motion, mask))
    return {"model": name, **merge_texture_motion(results)}


def row(name, outputs, data, budget):
    """One table row: against each scene's HQ."""
    r = realism_report(outputs, [d[1] for d in data], [d[2] for d in data], budget=budget)
    o = r["output"]
    return {"model": name, "ssim": r["ssim"], "lowpass_ssim": r["lowpass_ssim"], "nakagami_m": o["nakagami_m"],
            "fwhm_axial_px": o["fwhm_axial_px"], "fwhm_lateral_px": o["fwhm_lateral_px"], "c2st": r["c2st"],
            "c2st_se": r["c2st_se"], "histogram_w1": r["histogram_w1"], "target": r["target"],
            "anechoic_grey": r["anechoic_grey"]["output"], "target_anechoic_grey": r["anechoic_grey"]["target"]}


def c2st_cell(r: dict) -> str:
    """The C2ST with its standard error over classifiers, when there are several."""
    se = r.get("c2st_se", float("nan"))
    return f"{r['c2st']:.2f}" + (f" ± {se:.2f}" if np.isfinite(se) else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lq2hq,lq2hq_fast", help="comma-separated embedded names or checkpoints")
    ap.add_argument("--task", default="lq2hq", help="which panel is the input (lq2hq, seg2hq, hq2clinical)")
    ap.add_argument("-n", type=int, default=24)
    ap.add_argument("--size", type=frame_size, default=(256, 256),
                    help="frame side, or HxW (e.g. 1000x1386, the phantom's default; the still and --sector-only "
                         "tables only)")
    ap.add_argument("--seed", type=int, default=50000, help="first scene seed (never used in training)")
    ap.add_argument("--seeds", default=None, help="several first seeds, comma-separated, -n scenes each (e.g. "
                    "50000,60000: 48 scenes, the precision a 0.70 bar needs); replaces --seed")
    ap.add_argument("--settings", default="default", choices=["default", "varied", "outside"],
                    help="acquisition settings of the scenes; `--seed 1000 --settings varied` renders the first "
                         "held-out frames of the training set (what noise scales are chosen on, never the test seeds)")
    ap.add_argument("--noise", default="fixed", help="engine noise mode")
    ap.add_argument("--noise-off-too", action="store_true", help="also each model with its noise planes at zero")
    ap.add_argument("--outside", action="store_true", help="also low-passed SSIM to the input, in and outside range")
    ap.add_argument("--flicker", action="store_true", help="also temporal measures on a simulated scan")
    ap.add_argument("--motion", action="store_true", help="also the texture-motion table on moving-probe sequences")
    ap.add_argument("--motion-only", action="store_true", help="only the texture-motion table (no C2ST: minutes)")
    ap.add_argument("--invented", action="store_true", help="also the invented-structure table")
    ap.add_argument("--invented-only", action="store_true", help="only the invented-structure table (no C2ST)")
    ap.add_argument("--lowpass-px", type=float, default=LOWPASS_SIGMA,
                    help="--invented: the low-pass σ that keeps the anatomy, not the speckle (the measure's own is "
                         "for 256² frames; at 512² the same anatomy spans twice the pixels: 6)")
    ap.add_argument("--screen-grain-too", action="store_true",
                    help="--motion: also each staged model with its fixed grain drawn on the screen (before issue 27)")
    ap.add_argument("--fixed-renewal-too", action="store_true",
                    help="--motion: also each staged model renewing its scatterers as a hand-held scanner does "
                         "whatever its input shows (stops 41-51)")
    ap.add_argument("--kept-grain-too", action="store_true",
                    help="--motion: also each staged model with its anchored scatterers never renewed (before stop "
                         "41; a real texture's squares: before stop 42)")
    ap.add_argument("--lag", type=int, default=MOTION_LAG,
                    help="--motion: frames between the two compared (at 25 fps; 2 = 80 ms, the span over which a real "
                         "hand-held scanner's speckle persists, 8 = 320 ms, by which it has renewed)")
    ap.add_argument("--pose-too", action="store_true",
                    help="--motion: also each model with its fixed grain placed by the phantom's poses, not estimated")
    ap.add_argument("--repeats", type=int, default=C2STBudget.repeats,
                    help="C2ST classifiers averaged per row (8 on 48 scenes: standard error about 0.035; "
                         "--probes-only: 0 for no C2ST, the other columns in seconds)")
    ap.add_argument("--no-baselines", action="store_true",
                    help="leave out the identity and oracle rows (their C2ST costs as much as a model's; they do "
                         "not change with the model)")
    ap.add_argument("--probe", default=None, choices=PROBES,
                    help="--motion: the moving sequences from this probe kind's view (default: the original sector); "
                         "--invented: the scenes seen by it; --probes-only: only this kind")
    ap.add_argument("--unposed-c2st", action="store_true",
                    help="--probes-only: the C2ST without the frames' poses too (the stage's axial grain then in "
                         "samples of the view, not mm)")
    ap.add_argument("--probes-only", action="store_true",
                    help="only the report per probe kind (curvilinear, phased, linear, trapezoid phantom views)")
    ap.add_argument("--sector-only", action="store_true",
                    help="only the whole-sector C2ST (64-px patches anywhere in the sector, against other scenes' HQ)")
    ap.add_argument("--formation", default=FORMATIONS[0], choices=FORMATIONS,
                    help="how the phantom forms its frames (rf: the second formation, which no shipped model saw)")
    ap.add_argument("--anatomy", default=ANATOMIES[0], choices=ANATOMIES)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    LOOK.update(formation=args.formation, anatomy=args.anatomy)
    if args.formation != FORMATIONS[0] or args.anatomy != ANATOMIES[0]:
        print(f"phantom: {args.formation} formation, {args.anatomy} anatomy")

    if args.size[0] != args.size[1] and (args.invented or args.invented_only or args.motion or args.motion_only
                                         or args.probes_only or args.flicker):
        ap.error("--size HxW applies to the still and --sector-only tables only; give one side")
    if args.settings != "default" and (args.motion or args.motion_only or args.probes_only or args.sector_only):
        ap.error("--settings applies to the still and invented-structure tables only (the motion, probe and sector "
                 "tables render the default acquisition)")
    if args.repeats < 1 and not args.probes_only:
        ap.error("--repeats 0 (no C2ST) applies to the probe table only (--probes-only); give 1 or more")
    if args.lag != MOTION_LAG and not (args.motion or args.motion_only):
        ap.error("--lag applies to the motion table only (--motion, --motion-only)")
    if args.lag < 1:
        ap.error("--lag must be at least one frame")
    if not task(args.task).paired and not (args.invented_only or args.motion_only):
        ap.error(f"{args.task} has no HQ of the same scene to be scored against: its still table is "
                 f"research/real_table.py (held-out real frames); here --invented-only or --motion-only")
    shape, args.size = args.size, args.size[0]  # the other tables render squares
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    args.seed = seeds[0]
    if args.invented or args.invented_only:
        print_invented_table(args, seeds)
    if args.motion or args.motion_only:
        print_motion_table(args, seeds)
    if args.sector_only:
        return print_sector_table(args, seeds, shape)
    if args.probes_only:
        return print_probe_table(args, seeds)
    if args.motion_only or args.invented_only:
        return
    data = [d for s in seeds for d in scenes(args.n, shape, s, args.settings)]
    budget = C2STBudget(repeats=args.repeats)
    spec = task(args.task)
    src = SOURCE_INDEX[spec.source]
    rows = [] if args.no_baselines else [row(f"identity ({spec.source.upper()})", [d[src] for d in data], data,
                                             budget)]
    outside = scenes(args.n, shape, args.seed + 20000, "outside") if args.outside else None
    renderer = PhantomRenderer(args.size, args.size, seed=args.seed, **LOOK) if args.flicker else None
    for name in args.models.split(","):
        modes = [args.noise] + (["off"] if args.noise_off_too else [])
        for mode in modes:
            engine = load_engine(name, "torch", EngineOptions(noise=mode, seed=0))
            run = lambda img: to_uint8(engine.infer(to_float(img)))
            r = row(name + ("" if mode == args.noise else " (noise off)"), [run(d[src]) for d in data], data, budget)
            if outside is not None:
                r["lowpass_ssim_to_input"] = float(np.mean([lowpass_ssim(run(d[src]), d[src]) for d in data]))
                r["lowpass_ssim_to_input_outside"] = float(np.mean([lowpass_ssim(run(d[src]), d[src])
                                                                    for d in outside]))
            if renderer is not None and mode == args.noise:
                frame = lambda t: to_uint8(getattr(renderer.render(t), spec.source))
                paused = [frame(0.0)] * 10
                moving = [frame(i / 30) for i in range(60)]
                r["paused_output_change"] = flicker(paused, [run(f) for f in paused])["output_change"]
                r["flicker_ratio"] = flicker(moving, [run(f) for f in moving])["ratio"]
            rows.append(r)
    if not args.no_baselines:
        rows.append(row("oracle (HQ, new speckle)", [d[3] for d in data], data, budget))
    target = rows[0]["target"]
    print(f"{args.task}: {len(data)} held-out phantoms {shape[0]}x{shape[1]} (seeds {', '.join(f'{s}…' for s in seeds)}), "
          f"HQ target: Nakagami m "
          f"{target['nakagami_m']:.3f}, speckle FWHM {target['fwhm_axial_px']:.2f} / {target['fwhm_lateral_px']:.2f} px, "
          f"grey in fluid and vessels {rows[0]['target_anechoic_grey']:.1f}; "
          f"C2ST mean ± standard error of {budget.repeats} classifiers, {budget.steps} steps, seeds {budget.seed}…")
    print("| model | SSIM vs HQ | low-passed SSIM | Nakagami m | FWHM ax / lat px | C2ST | tissue W1 | fluid grey |"
          + (" LP-SSIM to input (in / outside) |" if args.outside else "") + (" flicker ratio | paused change |" if args.flicker else ""))
    print("|---" * (8 + bool(args.outside) + 2 * bool(args.flicker)) + "|")
    for r in rows:
        m = f"{r['nakagami_m']:.2f}" if r["nakagami_m"] < 100 else "n/a (flat)"  # a label map has no speckle
        line = (f"| {r['model']} | {r['ssim']:.3f} | {r['lowpass_ssim']:.3f} | {m} | "
                f"{r['fwhm_axial_px']:.2f} / {r['fwhm_lateral_px']:.2f} | {c2st_cell(r)} | {r['histogram_w1']:.1f} | "
                f"{r['anechoic_grey']:.1f} |")
        if args.outside:
            line += (f" {r['lowpass_ssim_to_input']:.3f} / {r['lowpass_ssim_to_input_outside']:.3f} |"
                     if "lowpass_ssim_to_input" in r else " |")
        if args.flicker:
            line += (f" {r['flicker_ratio']:.3f} | {r['paused_output_change']:.3f} |" if "flicker_ratio" in r else " | |")
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


SECTOR_PATCH, SECTOR_PATCHES, SECTOR_STEPS = 64, 24, 1000  # px, per image, classifier steps (issue 27's budget)
OTHER_SCENES = 500  # the target HQ comes from scenes this many seeds on: other anatomy, never the outputs' own


def sector_patches(images, segs):
    """64-px patches wholly inside the sector (labels > 0), 24 per image at seeded places, and each one's image."""
    rng = np.random.default_rng(0)
    cut = [tissue_patches(img, seg > 0, SECTOR_PATCHES, rng, SECTOR_PATCH) for img, seg in zip(images, segs)]
    return [p for c in cut for p in c], [i for i, c in enumerate(cut) for _ in c]


def sector_c2st(images, segs, target: tuple, repeats: int) -> tuple[float, float]:
    """Mean and standard error over ``repeats`` classifiers of the whole-sector C2ST of ``images`` (their scenes'
    ``segs``) against ``target`` = sector_patches(HQ of other scenes)."""
    found, groups = sector_patches(images, segs)
    runs = [c2st(found, target[0], C2STBudget(steps=SECTOR_STEPS, seed=k), groups, target[1]) for k in range(repeats)]
    return float(np.mean(runs)), float(np.std(runs) / np.sqrt(len(runs)))


def print_sector_table(args, seeds: list[int], shape: tuple[int, int]) -> None:
    """C2ST on 64-px patches wholly inside the sector (the phantom's labels > 0), not only tissue interiors: skull,
    midline, fluid and boundaries are where a stage that low-passes the net and adds even grain shows. Each row's
    frames of scenes A against HQ of scenes B (other seeds), split by image; HQ of scenes A is the floor."""
    data = [d for s in seeds for d in scenes(args.n, shape, s)]
    other = [d for s in seeds for d in scenes(args.n, shape, s + OTHER_SCENES)]
    target = sector_patches([d[1] for d in other], [d[2] for d in other])

    def score(name, images):
        mean, se = sector_c2st(images, [d[2] for d in data], target, args.repeats)
        print(f"| {name} | {mean:.2f} ± {se:.2f} |", flush=True)

    print(f"whole-sector C2ST: {len(data)} scenes a side ({shape[0]}x{shape[1]}, seeds {', '.join(f'{s}…' for s in seeds)} "
          f"against HQ of seeds +{OTHER_SCENES}), {SECTOR_PATCH}-px patches anywhere in the sector, "
          f"{SECTOR_PATCHES} per image, split by image, {SECTOR_STEPS} steps, mean ± s.e. of {args.repeats}")
    print("| frames | C2ST |")
    print("|---|---|")
    if not args.no_baselines:
        score("HQ of the same scenes (the floor)", [d[1] for d in data])
        score("LQ (the input)", [d[0] for d in data])
    for name in args.models.split(","):
        for mode in args.noise.split(","):
            engine = load_engine(name, "torch", EngineOptions(noise=mode, seed=0))
            outputs = []
            for i, d in enumerate(data):
                engine.reset(f"scene-{i}")  # each still its own grain, as `usnst stylize` gives
                outputs.append(to_uint8(engine.infer(to_float(d[0]))))
            score(f"{name}, noise {mode}", outputs)


def print_probe_table(args, seeds: list[int]) -> None:
    """Per probe kind: the models' outputs on that probe's held-out phantom views against its HQ — SSIM (beside the
    input's), speckle FWHM and Nakagami m (the stage's grain is formed on each view's own beams; with the frame's pose it also knows the pixel
    spacing, so its axial width stays in mm) and the tissue C2ST with poses (``--unposed-c2st``: without them too)."""
    budget = C2STBudget(repeats=max(args.repeats, 1))
    print(f"per probe kind: {args.n} scenes per seed set ({', '.join(f'{s}…' for s in seeds)}), {args.size}², "
          f"noise {args.noise.split(',')[0]}; " + (f"C2ST against the same scenes' HQ, tissue patches, {budget.steps} "
          f"steps, mean ± s.e. of {budget.repeats}" if args.repeats > 0 else "no C2ST (--repeats 0)") +
          ". Domain: phantom (each probe's own view; the stage shares its physics)")
    print("| probe | frames | SSIM to HQ | FWHM ax / lat px | Nakagami m | C2ST |")
    print("|---|---|---|---|---|---|")
    for kind in [args.probe] if args.probe else PROBES:
        renders = []
        for s in seeds:
            for i in range(args.n):
                renderer = PhantomRenderer(args.size, args.size, seed=s + i, geometry=probe(kind), **LOOK)
                sample = renderer.render(float(i % 7))
                renders.append(((to_uint8(sample.lq), to_uint8(sample.hq), sample.seg.astype(np.uint8), None),
                                renderer.image_to_world(float(i % 7))))
        data = [d for d, _ in renders]
        target = row("HQ", [d[1] for d in data], data, C2STBudget(steps=1, repeats=1))
        identity = row("LQ", [d[0] for d in data], data, C2STBudget(steps=1, repeats=1))
        print(f"| {kind} | HQ (LQ, the input: its SSIM) | {identity['ssim']:.4f} | {target['fwhm_axial_px']:.2f} / "
              f"{target['fwhm_lateral_px']:.2f} | {target['nakagami_m']:.2f} | — |", flush=True)
        for name in args.models.split(","):
            engine = load_engine(name, "torch", EngineOptions(noise=args.noise.split(",")[0], seed=0))
            for posed in (True, False):
                outputs = []
                for i, (d, pose) in enumerate(renders):
                    engine.reset(f"scene-{i}")
                    outputs.append(to_uint8(engine.infer_at(to_float(d[0]), pose if posed else None)))
                scored = (posed or args.unposed_c2st) and args.repeats > 0
                r = row(name, outputs, data, budget if scored else C2STBudget(steps=1, repeats=1))
                ratio = lambda key: r[key] / target[key]
                print(f"| {kind} | {name}, {'with' if posed else 'without'} poses | {r['ssim']:.4f} | "
                      f"{r['fwhm_axial_px']:.2f} / "
                      f"{r['fwhm_lateral_px']:.2f} ({ratio('fwhm_axial_px'):.2f} / {ratio('fwhm_lateral_px'):.2f} of "
                      f"HQ) | {r['nakagami_m']:.2f} ({ratio('nakagami_m'):.2f}) | "
                      f"{c2st_cell(r) if scored else '—'} |", flush=True)


def print_invented_table(args, seeds: list[int]) -> None:
    """Share of the sector whose low-passed grey differs from the input's after a monotone map (mean over frames)
    and the widest such blob (largest over frames), on phantom scenes and on uniform-speckle cyst frames."""
    data = [d for s in seeds for d in scenes(args.n, args.size, s, args.settings, probe_kind=args.probe)]
    src = SOURCE_INDEX[task(args.task).source]
    if src == SOURCE_INDEX["seg"]:
        raise SystemExit("--invented: a model of segmentations is not compared to its input's grey levels")
    cysts = [to_uint8(uniform_cyst_frame(args.size, args.size, seed=i)) for i in range(args.n)]
    cell = lambda found: f"{np.mean([f['share'] for f in found]):.2%} / {max(f['largest_blob_px'] for f in found):.1f}"
    print(f"invented structure (share of the sector / widest blob px): {len(data)} phantom scenes ({args.settings} "
          f"acquisition, {args.probe or 'the original sector'} probe), {len(cysts)} "
          f"uniform cyst frames (a linear array, pixel-grid speckle), {args.size}², low-pass σ {args.lowpass_px:g} px")
    print(f"| model | phantom (vs its {task(args.task).source.upper()} input) | uniform cyst frames (vs the input) |")
    print("|---|---|---|")
    found = lambda output, source: invented_structure(output, source, sigma=args.lowpass_px)
    print(f"| HQ vs LQ (the phantom's own two qualities) | {cell([found(d[1], d[0]) for d in data])} | |")
    for name in args.models.split(","):
        engine = load_engine(name, "torch", EngineOptions(noise=args.noise.split(",")[0], seed=0))

        def run(img):
            engine.reset()
            return to_uint8(engine.infer(to_float(img)))
        print(f"| {name} | {cell([found(run(d[src]), d[src]) for d in data])} | "
              f"{cell([found(run(c), c) for c in cysts])} |", flush=True)


def print_motion_table(args, seeds: list[int]) -> None:
    sequences = moving_probes(args.n, args.size, seeds, args.probe, args.lag)
    source = task(args.task).source
    if source == "seg":
        raise SystemExit("--motion: a model of segmentations has no speckle in its input to follow")
    rows = [motion_row("HQ (scatterers fixed in the world)", sequences), motion_row("LQ (the input)", sequences)]
    for name in args.models.split(","):
        for mode in args.noise.split(","):
            engine = load_engine(name, "torch", EngineOptions(noise=mode, seed=0))
            run = lambda img, pose, engine=engine: to_float(to_uint8(engine.infer(img)))
            run.reset = engine.reset
            rows.append(motion_row(f"{name}, noise {mode}" + (" (HQ in)" if source == "hq" else ""), sequences, run,
                                   source))
            if mode == "fixed" and args.pose_too:
                posed = lambda img, pose, engine=engine: to_float(to_uint8(engine.infer_at(img, pose)))
                posed.reset = engine.reset
                rows.append(motion_row(f"{name}, noise fixed, placed by the simulator's pose", sequences, posed, source))
            if mode == "fixed" and args.fixed_renewal_too and hasattr(engine, "stage"):
                engine.stage.renew = RENEW_DEPTH_SHARE  # kept through resets: the stage is rebuilt with its own renewal
                rows.append(motion_row(f"{name}, noise fixed, fixed renewal (stops 41-51)", sequences, run, source))
                engine.stage.renew = None
            if mode == "fixed" and args.kept_grain_too and hasattr(engine, "stage"):
                engine.stage.renew = 0  # kept through resets: the stage is rebuilt with its own renewal
                label = f"{name}, noise fixed, scatterers kept (before stop 41, squares 42)"
                rows.append(motion_row(label, sequences, run, source))
            if mode == "fixed" and args.screen_grain_too and hasattr(engine, "stage"):
                engine.stage = BeamSpeckle(engine.stage.config, anchored=False)  # the stream grain before issue 27
                rows.append(motion_row(f"{name}, noise fixed, grain on the screen (before)", sequences, run, source))
    print(f"texture motion: {len(sequences)} moving-probe sequences ({args.n} scenes × 2 starts per seed "
          f"{', '.join(f'{s}…' for s in seeds)}), {args.size}², frames {args.lag} apart at {MOTION_FPS} fps; "
          f"32-px windows lit in HQ whose anatomy moved ≥ 1.5 px (true motion)")
    print("| model | windows | follows the anatomy | correlation after motion | correlation at zero shift |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['windows']} | {r['following']:.0%} | {r['after_motion']:.2f} | {r['at_zero']:.2f} |",
              flush=True)
    if args.json:
        with open(args.json.replace(".json", ".motion.json"), "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
