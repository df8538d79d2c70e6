"""Batch stylization: an engine over a folder or glob of images, safe to interrupt, resume and shard.

- Each output is written to a temporary file and renamed, so an interrupted run never leaves a half-written image.
- A finished output is skipped on the next run (resume), unless ``overwrite``.
- ``shard=(i, n)`` takes every n-th input starting at i of the sorted list, so n processes or machines split a set
  without talking to each other.
- An unreadable input is recorded and skipped; the run finishes and reports every failure at the end.
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from usnst.engines.base import Engine, sizes_grain_in_mm
from usnst.engines.checkpoint import file_sha256
from usnst.offline.datasets import crop_brightness_bar, split_triptych
from usnst.offline.metrics import mean_scores, score_pair
from usnst_io.atomic import remove_stale_temp_files
from usnst_io.media import (
    DICOM_SUFFIXES,
    ITK_SUFFIXES,
    RECORDING_SUFFIXES,
    VIDEO_SUFFIXES,
    BatchItem,
    frame_png_paths,
    is_stylizable,
    plan_batch,
    read_gray,
    read_sequence,
    to_float,
    to_uint8,
    write_frame_times,
    write_png,
)

log = logging.getLogger(__name__)

LAYOUTS = ("plain", "triptych", "clinical")
DICOM_FORMATS = ("png", "dicom")


@dataclass
class StylizeJob:
    inputs: str  # a folder (searched recursively) or a glob pattern
    out: str
    layout: str = "plain"  # triptych: stylize the LQ panel, HQ is the metrics target; clinical: crop the bar
    targets: str | None = None  # folder of targets with the same relative paths (plain layout metrics)
    metrics: bool = False
    shard: tuple[int, int] = (0, 1)
    overwrite: bool = False
    progress: bool = True
    dicom_format: str = "png"  # DICOM inputs: "png" (one PNG per frame) or "dicom" (a derived DICOM, same geometry)
    keep_identity: bool = False  # derived DICOM: keep the source's patient/study identity (default: de-identified)
    spacing_mm: tuple[float, float] | None = None  # (row, column) mm per pixel of inputs that carry none of their own


@dataclass
class StylizeReport:
    total: int = 0
    written: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)

    notes: dict[str, str] = field(default_factory=dict)  # kind → what a user should know about these inputs (once)

    def note(self, kind: str, text: str) -> None:
        if kind not in self.notes:
            self.notes[kind] = text
            log.warning("%s", text)

    def summary(self) -> dict:
        out = {"inputs": self.total, "written": self.written, "skipped_existing": self.skipped,
               "failed": len(self.failed), "failures": [{"input": p, "error": e} for p, e in self.failed],
               "notes": list(self.notes.values())}
        if self.metrics:
            out.update(mean_scores(self.metrics, prefix="mean_"))
        return out


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' with 0 ≤ i < n."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"shard {text}: need 0 <= i < n")
    return i, n


def _content_key(path: Path) -> str | None:
    """The file's SHA-256, which names its noise stream; None when it cannot be read (reading it fails next, and
    the failure is reported there)."""
    try:
        return file_sha256(path)
    except OSError:
        return None


def _stylize_one(engine: Engine, img: np.ndarray, pose: np.ndarray | None = None,
                 spacing_mm: tuple[float, float] | None = None) -> np.ndarray:
    return to_uint8(engine.infer_at(to_float(img), pose, spacing_mm))


IDENTITY_FILE = "usnst-model.json"


def model_identity(engine: Engine) -> dict:
    """What makes two runs' outputs comparable: the checkpoint's bytes (SHA-256), the noise mode and its seed. An
    engine artifact that could not be verified against its checkpoint is named by its own bytes instead
    (``artifact_sha256``): what it claims to have been built from is not evidence."""
    d = engine.describe()
    who = ({"checkpoint_sha256": d["checkpoint_sha256"]} if d.get("checkpoint_sha256")
           else {"artifact_sha256": d.get("artifact_sha256")})
    return {**who, "task": d.get("task"), "noise": d.get("noise"), "seed": d.get("seed")}


def claim_output_folder(out_dir: Path, engine: Engine, overwrite: bool,
                        spacing_mm: tuple[float, float] | None = None) -> None:
    """Record which model writes ``out_dir`` and refuse to resume into a folder another model (or another noise, or
    another --spacing-mm) wrote: "N already done" would otherwise silently mix two models' outputs in one set."""
    mine = model_identity(engine)
    if spacing_mm is not None:  # recorded only when given, so folders written before the option still resume
        mine["spacing_mm"] = list(spacing_mm)
    marker = out_dir / IDENTITY_FILE
    if marker.is_file() and not overwrite:
        try:
            theirs = json.loads(marker.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{marker} is damaged ({exc}): it records which model wrote {out_dir}; restore it, choose "
                             "another --out, or pass --overwrite to replace the outputs") from None
        if theirs != mine:
            differ = ", ".join(f"{k} {str(theirs.get(k))[:12]} here vs {str(mine[k])[:12]} now" for k in mine
                               if theirs.get(k) != mine[k])
            raise ValueError(f"{out_dir} holds another model's outputs ({differ}): choose another --out, or "
                             "--overwrite to replace them")
    elif not marker.is_file() and not overwrite and out_dir.is_dir() and any(
            p.suffix.lower() in (".png", ".dcm") for p in out_dir.rglob("*")):
        raise ValueError(f"{out_dir} holds images no usnst stylize run has claimed ({IDENTITY_FILE} is missing): "
                         "choose another --out, or --overwrite to replace them")
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(mine, indent=2))


def _source_panel(engine: Engine) -> str:
    """Which triptych panel the engine's model takes as input, from its task (LQ when the task is unknown)."""
    from usnst.offline.tasks import TASKS

    spec = TASKS.get(engine.describe().get("task") or "")
    return spec.source if spec else "lq"


def run_stylize(engine: Engine, job: StylizeJob) -> StylizeReport:
    if job.layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {job.layout!r}")
    if job.keep_identity and job.dicom_format != "dicom":
        raise ValueError("--keep-identity applies to derived DICOM only: add --dicom-format dicom (PNG outputs carry "
                         "no header)")
    if job.spacing_mm is not None and not sizes_grain_in_mm(engine):
        raise ValueError("--spacing-mm: this model's grain has no size in mm (no beam-speckle stage fitted with its "
                         "sample_mm, or a real scanner's texture), so a pixel spacing would change nothing")
    out_dir = Path(job.out)
    items = plan_batch(job.inputs, out_dir, accept=is_stylizable)  # over the whole set: every shard names alike
    i, n = job.shard
    items = items[i::n]
    if out_dir.is_dir():
        remove_stale_temp_files(out_dir)
    claim_output_folder(out_dir, engine, job.overwrite, job.spacing_mm)
    source_panel = _source_panel(engine)
    report = StylizeReport(total=len(items))
    for item in tqdm(items, desc="stylize", unit="img", disable=not job.progress):
        path, rel = item.input, item.rel
        # each file as the first of a stream, its noise drawn for its content: no output depends on order, name,
        # shard or resume, and unrelated images do not share one grain
        engine.reset(key=_content_key(path))
        if path.suffix.lower() in DICOM_SUFFIXES:
            _stylize_dicom(engine, path, item, job, report)
            continue
        if path.suffix.lower() in VIDEO_SUFFIXES + ITK_SUFFIXES + RECORDING_SUFFIXES:
            _stylize_sequence(engine, path, item, job, report)
            continue
        out_path = item.output(".png")
        if out_path.exists() and not job.overwrite and not job.metrics:
            report.skipped += 1
            continue
        try:
            img = read_gray(path)
            target = None
            if job.layout == "triptych":  # the panel the model's task takes (LQ, or the label map for seg2hq)
                t = split_triptych(img, str(rel))
                img, target = getattr(t, source_panel), t.hq
            elif job.layout == "clinical":
                img = crop_brightness_bar(img).image
            elif looks_like_triptych(img):
                report.note("triptych", f"{rel} looks like an LQ | HQ | segmentation triptych: with --layout plain "
                            "the whole strip is stylized, label panel and gaps included; --layout triptych stylizes "
                            "its input panel")
            if job.metrics and job.targets:
                target = read_gray(Path(job.targets) / rel)
            if out_path.exists() and not job.overwrite:
                styled = read_gray(out_path)
                report.skipped += 1
            else:
                styled = _stylize_one(engine, img, None, job.spacing_mm)
                write_png(out_path, styled)
                report.written += 1
            if job.metrics and target is not None:
                report.metrics.append({"input": str(rel), **score_pair(styled, target, img)})
        except Exception as exc:  # one bad input must not end a long batch
            log.warning("skipping %s: %s", path, exc)
            report.failed.append((str(path), f"{exc.__class__.__name__}: {exc}"))
    _write_reports(out_dir, job, report)
    return report


def looks_like_triptych(img: np.ndarray) -> bool:
    """Three equal panels side by side whose last is a label map (a few flat grey levels) and whose first is an
    image: the thesis' LQ | HQ | seg layout."""
    h, w = img.shape[:2]
    if img.ndim != 2 or w % 3 or w // 3 < 16 or h < 16:
        return False
    first, last = img[:, : w // 3], img[:, 2 * w // 3:]
    return len(np.unique(last)) <= 32 and len(np.unique(first)) > 64


def _note_scanner_input(series, path: Path, report: StylizeReport) -> None:
    """Say once what a scanner's DICOM becomes: usnst's models are made for simulator frames."""
    maker = str(series.dataset.get("Manufacturer") or "").strip()
    report.note("scanner", f"{path.name} is a scanner's DICOM{' (' + maker + ')' if maker else ''}: usnst's models "
                "are trained on simulator frames, and burned-in text, calipers and the black background are "
                "stylized as if they were image; clean screenshots first (`usnst clean`) or expect them in the output")
    if series.photometric.upper() not in ("MONOCHROME1", "MONOCHROME2", ""):
        colour = read_dicom_colour_share(series)
        if colour > 0.001:
            report.note("colour", f"{path.name}: {100 * colour:.1f}% of its pixels are colour (Doppler, overlays): the "
                        "models take grey B-mode, so colour becomes grey in the output")


def read_dicom_colour_share(series) -> float:
    """Share of pixels whose colour channels differ by more than 30 grey levels (first frame)."""
    from usnst_io.dicom import read_dicom

    rgb = read_dicom(series.path, colour=True).frames[0]
    if rgb.ndim != 3:
        return 0.0
    spread = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2).astype(np.int16)
    return float((spread > 30).mean())


def _stylize_dicom(engine: Engine, path: Path, item: BatchItem, job: StylizeJob, report: StylizeReport) -> None:
    """A DICOM still or cine: every frame stylized, written as a derived DICOM (same geometry, new UIDs) or as
    PNGs (``name.png``, or ``name_0000.png``… for a cine). Resume checks the last file a run would write."""
    from usnst_io.dicom import (
        pixel_spacing_mm,
        read_dicom,
        stylize_dicom,
        write_derived,
    )

    try:
        series = read_dicom(path)
        _note_scanner_input(series, path, report)
        n = len(series.frames)
        outputs = [item.output(".dcm")] if job.dicom_format == "dicom" else frame_png_paths(item.out_stem, n)
        if outputs[-1].exists() and not job.overwrite:
            report.skipped += 1
            return
        spacing = pixel_spacing_mm(series.dataset) or job.spacing_mm  # the grain's size in mm, the scanner's own first
        styled = stylize_dicom(series, lambda f: _stylize_one(engine, f, None, spacing))
        if job.dicom_format == "dicom":
            identity = model_identity(engine)
            write_derived(outputs[0], styled, series, f"usnst style transfer ({identity['task'] or 'model'})",
                          keep_identity=job.keep_identity, derivation=json.dumps(identity, sort_keys=True))
        else:
            for out, frame in zip(outputs, styled):
                write_png(out, frame)
        report.written += 1
    except Exception as exc:  # one bad input must not end a long batch
        log.warning("skipping %s: %s", path, exc)
        report.failed.append((str(path), f"{exc.__class__.__name__}: {exc}"))


def _stylize_sequence(engine: Engine, path: Path, item: BatchItem, job: StylizeJob, report: StylizeReport) -> None:
    """A recording (.usrec), a video or an ITK sequence (.mha, .nrrd): every frame stylized, written as ``name_0000.png``… with ``name.times.csv``
    (file, seconds from the first frame) so `usnst export`-style timing survives. Resume checks the last file."""
    try:
        seq = read_sequence(path)
        outputs = frame_png_paths(item.out_stem, len(seq.frames))
        if outputs[-1].exists() and not job.overwrite:
            report.skipped += 1
            return
        for out, frame, pose, spacing in zip(outputs, seq.frames, seq.poses, seq.spacings):
            write_png(out, _stylize_one(engine, frame, pose, spacing or job.spacing_mm))
        write_frame_times(item.output(".times.csv"), [o.name for o in outputs], seq.times)
        report.written += 1
        for problem in seq.problems:  # the readable frames are written; the loss is reported (and the exit status 1)
            report.failed.append((str(path), f"frames lost: {problem}"))
    except Exception as exc:  # one bad input must not end a long batch
        log.warning("skipping %s: %s", path, exc)
        report.failed.append((str(path), f"{exc.__class__.__name__}: {exc}"))


def _write_reports(out_dir: Path, job: StylizeJob, report: StylizeReport) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    i, n = job.shard
    suffix = f".shard-{i}-of-{n}" if n > 1 else ""
    (out_dir / f"stylize{suffix}.json").write_text(json.dumps(report.summary(), indent=2))
    if report.metrics:
        with open(out_dir / f"metrics{suffix}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(report.metrics[0]))
            w.writeheader()
            w.writerows(report.metrics)
