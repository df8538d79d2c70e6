"""Real scanner frames from the package registries: obtained by pinned name and hash, decoded, cleaned of their UI
and split by scanner, with a manifest saying where every frame came from (issue 28).

The project's own phantom cannot show whether an output looks like a scanner's; these files can. Two archives hold
them: ``pydicom-data`` (MIT; DICOM test files, among them real cardiac, pelvic and lymph-node scans) and the
``itk-pocus`` source archive (Apache-2.0; hand-held scanners imaging eye and resolution phantoms, one real eye).
Every file of either archive that shows ultrasound is listed here, as part of a recording with its scanner and
probe, or in ``LEFT_OUT`` with the reason: the provenance of a frame set is part of any figure measured on it.

A recording (one acquisition: a cine, or the stills and video of one session) is the unit of the split, and so is
the scanner's maker: frames of one cine are near-duplicates, and a held-out recording of a scanner seen in training
would measure memory of that scanner, not realism.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from usnst.engines.checkpoint import file_sha256
from usnst.offline.screenshot import clean_cine, clean_screenshot
from usnst_io import media

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    package: str
    version: str
    filename: str  # what `pip download` writes
    sha256: str
    licence: str
    root: str  # the folder inside the archive that holds the scans
    sdist: bool = False  # the source archive, not a wheel (itk-pocus ships its test data only there)

    def pip_command(self, dest: Path) -> list[str]:
        binary = ["--no-binary", ":all:"] if self.sdist else ["--only-binary", ":all:"]
        return [sys.executable, "-m", "pip", "download", "--no-deps", *binary, "-d", str(dest),
                f"{self.package}=={self.version}"]


@dataclass(frozen=True)
class Recording:
    id: str
    archive: str  # an ARCHIVES key
    files: tuple[str, ...]  # under the archive's root
    maker: str  # the split's unit: a maker's scanners share their image processing
    scanner: str
    probe: str  # linear | curvilinear | phased
    subject: str
    views: int = 1  # a screen showing several views side by side, cut into that many equal columns


ARCHIVES = {
    "pydicom-data": Archive("pydicom-data", "1.0.0", "pydicom_data-1.0.0-py3-none-any.whl",
                            "622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637", "MIT",
                            "data_store/data/"),
    "itk-pocus": Archive("itk-pocus", "0.3.2", "itk-pocus-0.3.2.tar.gz",
                         "54b9442d8244d47c233170650b9edb06d0b4262893b2d7659d3b2c122d711e33", "Apache-2.0",
                         "itk-pocus-0.3.2/tests/data/", sdist=True),
}

RECORDINGS = (
    Recording("ge-logiq700-lymph-node", "pydicom-data", ("US1_UNCR.dcm",), "GE", "GE LOGIQ 700", "linear",
              "lymph node, power Doppler box"),
    Recording("sonosite-turbo-heart", "pydicom-data", ("color3d_jpeg_baseline.dcm",), "SonoSite", "SonoSite Turbo",
              "phased", "adult heart, parasternal long axis, 120-frame cine"),
    Recording("philips-epiq7c-heart", "pydicom-data", ("JPGLosslessP14SV1_1s_1f_8b.dcm",), "Philips",
              "Philips EPIQ 7C", "phased", "adult heart (JPEG lossless: needs the pylibjpeg-libjpeg plugin)"),
    Recording("aloka-ssd4000-pelvis", "pydicom-data", ("gdcm-US-ALOKA-16.dcm",), "Aloka", "Aloka SSD-4000",
              "curvilinear", "pelvis: bladder and uterus, two views side by side", views=2),
    Recording("butterfly-iq-nerve-preset", "itk-pocus", ("butterfly-mean-crop.mp4",), "Butterfly", "Butterfly iQ",
              "linear", "phantom, nerve preset, moving probe"),
    Recording("butterfly-iq-ocular", "itk-pocus", ("butterfly-ocular-phantom.mp4",), "Butterfly", "Butterfly iQ",
              "linear", "ocular phantom, moving probe"),
    Recording("butterfly-iq-ocular-2", "itk-pocus", ("butterfly-vsync.mp4",), "Butterfly", "Butterfly iQ", "linear",
              "ocular phantom, moving probe"),
    Recording("butterfly-iq-resolution", "itk-pocus", ("butterfly_axial-lateral-resolution-2020.png",), "Butterfly",
              "Butterfly iQ", "linear", "resolution phantom: wires and anechoic cysts"),
    Recording("clarius-ocular", "itk-pocus", ("clarius-ocular-phantom.mp4", "clarius-ocular-short.mp4",
                                              "clarius-ocular-image.png"), "Clarius", "Clarius", "linear",
              "ocular phantom, moving probe (two videos and a still of one session)"),
    Recording("clarius-resolution", "itk-pocus", ("clarius_axial-lateral-resolution-2020.png",), "Clarius",
              "Clarius", "linear", "resolution phantom: wires and anechoic cysts"),
    Recording("interson-ocular", "itk-pocus", ("interson-image.jpg",), "Interson", "Interson", "linear",
              "ocular phantom"),
    Recording("interson-ocular-2", "itk-pocus", ("interson-phantom.png",), "Interson", "Interson", "linear",
              "ocular phantom, acoustic shadow"),
    Recording("sonivate-snr", "itk-pocus", ("sonivate-snr-1.mha",), "Sonivate", "Sonivate SonicEye", "linear",
              "speckle phantom with point targets, 300-frame sequence"),
    Recording("sonivate-anechoic", "itk-pocus", ("sonivate-anechoic_1-1.nrrd",), "Sonivate", "Sonivate SonicEye",
              "linear", "anechoic-target phantom"),
    Recording("sonoque-phantom", "itk-pocus", ("sonoque-mean-crop.MOV",), "Sonoque", "Sonoque", "linear",
              "phantom, moving probe (its DICOM header says CURVED LINEAR; the image is a rectangle)"),
    Recording("sonoque-anechoic", "itk-pocus", ("sonoque_anechoic-3mm-3mm.dcm",), "Sonoque", "Sonoque", "linear",
              "3 mm anechoic cysts"),
    Recording("sonoque-resolution", "itk-pocus", ("sonoque_axial-lateral-resolution-2020.dcm",), "Sonoque",
              "Sonoque", "linear", "resolution phantom: wires and anechoic cysts"),
    Recording("sonosite-l25-eye", "itk-pocus", ("sonosite-anon-eye1-video.mp4", "sonosite-anon-eye1.jpg"),
              "SonoSite", "SonoSite, L25xp probe", "linear", "a human eye, anonymised (video and still)"),
)

# Files that show ultrasound but are not used, and why (looked at one by one).
LEFT_OUT = {
    "pydicom-data": {
        "US1_UNCI.dcm": "US1_UNCR.dcm's image, re-encoded", "US1_J2KR.dcm": "US1_UNCR.dcm's image, re-encoded",
        "US1_J2KI.dcm": "US1_UNCR.dcm's image, re-encoded (lossy)",
        "gdcm-US-ALOKA-16_big.dcm": "gdcm-US-ALOKA-16.dcm's image, big-endian",
        "color-pl.dcm": "a 120 × 256 TEE frame mostly covered by colour flow: too little B-mode to keep",
        "color-px.dcm": "color-pl.dcm's image, re-encoded",
        "OBXXXX1A.dcm": "Philips CX50 with the probe in air: reverberation only, no tissue (and its 5 re-encodings)",
    },
    "itk-pocus": {
        "interson-image-annotation.jpg": "interson-image.jpg with annotations drawn on it",
        "interson-video.cine": "Interson's own cine format: no reader",
    },
}

# Makers whose recordings are held out: the real frames a model is judged on, never trained on. Chosen so both
# sides hold phantom and tissue views: phantoms of Clarius and Sonoque, the Aloka pelvis.
HELD_OUT_MAKERS = frozenset({"Clarius", "Sonoque", "Aloka"})
PROBES = ("linear", "curvilinear", "phased")
MIN_CHANGE = 5.0  # grey levels: see ``distinct``
MAX_INPAINTED = 0.02  # a frame whose overlays cover more of its region than this is not clean enough to keep


def split_of(recording: Recording, held_out: frozenset[str] = HELD_OUT_MAKERS) -> str:
    return "held_out" if recording.maker in held_out else "train"


def obtain(archive: Archive, cache: Path, say=log.info) -> Path:
    """The archive in ``cache``, downloaded by pinned name and version through pip (so a user's index or proxy
    settings apply) unless already there, and checked against its pinned SHA-256."""
    path = cache / archive.filename
    if not path.is_file():
        say(f"downloading {archive.package}=={archive.version} ({archive.licence}) from the package index")
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(archive.pip_command(cache), capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise OSError(f"could not download {archive.package}=={archive.version}: {' / '.join(tail)} (download "
                          f"it by hand with `{' '.join(archive.pip_command(cache)[1:])}` and run again)")
    digest = file_sha256(path)
    if digest != archive.sha256:
        raise ValueError(f"{path}: SHA-256 {digest}, not the pinned {archive.sha256}: a changed or damaged "
                         f"download; delete it and run again")
    return path


def extract(archive: Archive, path: Path, names: Iterable[str], dest: Path) -> Path:
    """The named members (under the archive's root) copied to ``dest``/package-version/, once."""
    folder = dest / f"{archive.package}-{archive.version}"
    wanted = [n for n in names if not (folder / n).is_file()]
    if not wanted:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            members = set(z.namelist())
            for name in wanted:
                if archive.root + name in members:
                    with z.open(archive.root + name) as src, open(folder / name, "wb") as out:
                        shutil.copyfileobj(src, out)
    else:
        with tarfile.open(path) as t:
            for name in wanted:
                try:
                    src = t.extractfile(archive.root + name)
                except KeyError:
                    continue
                if src is not None:
                    with src, open(folder / name, "wb") as out:
                        shutil.copyfileobj(src, out)
    return folder


def read_frames(path: Path) -> Iterator[np.ndarray]:
    """A file's frames: RGB where it has colour (overlays are found by it), grey otherwise."""
    if media.is_image(path):
        yield media.read_color(path)
        return
    for _, frame, _ in media.iter_sequence(path, colour=True):
        yield frame


def distinct(frames: Iterable[np.ndarray], min_change: float = MIN_CHANGE) -> Iterator[np.ndarray]:
    """The frames that differ from the last one kept by at least ``min_change`` grey levels on average, measured on
    the central half of the screen at quarter size (the UI around it and single-pixel noise do not count). A paused
    probe gives near-copies that would weigh one view many times; at 5 grey levels the itk-pocus videos keep about
    a third of their frames, a still probe's video one."""
    last = None
    for frame in frames:
        grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        h, w = grey.shape
        small = cv2.resize(grey[h // 4:3 * h // 4, w // 4:3 * w // 4], None, fx=0.25, fy=0.25,
                           interpolation=cv2.INTER_AREA).astype(np.float32)
        if last is None or np.abs(small - last).mean() >= min_change:
            last = small
            yield frame


def views_of(frame: np.ndarray, views: int) -> list[np.ndarray]:
    w = frame.shape[1]
    return [frame[:, k * w // views:(k + 1) * w // views] for k in range(views)]


def clean_file(path: Path, views: int, min_change: float) -> tuple[list[np.ndarray], dict]:
    """The cleaned grey imaging regions of one file's distinct frames, view by view, and what happened to them."""
    frames = list(distinct(read_frames(path), min_change))
    kept, dropped = [], 0
    for view in range(views):
        screens = [views_of(f, views)[view] for f in frames]
        results = clean_cine(screens) if len(screens) > 1 else [clean_screenshot(screens[0])]
        for r in results:
            if r.report["overlay_pixels_inpainted"] > MAX_INPAINTED * r.region.sum() or min(r.image.shape) < 64:
                dropped += 1
            else:
                kept.append(r.image)
    return kept, {"distinct_frames": len(frames), "views": views, "frames_kept": len(kept), "frames_not_clean": dropped,
                  "crop": results[-1].report["crop"] if frames else None}


def to_height(image: np.ndarray, height: int | None) -> np.ndarray:
    """The image scaled to ``height`` rows, aspect kept: frames of scanners whose screens differ (480 to 1,455
    rows here) compared as a viewer sees them on one display, and at the simulator's frame size."""
    if height is None or image.shape[0] == height:
        return image
    scale = height / image.shape[0]
    size = (max(1, round(image.shape[1] * scale)), height)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def build(out: str | Path, cache: str | Path, min_change: float = MIN_CHANGE, overwrite: bool = False,
          height: int | None = None,
          archives: dict[str, Archive] = ARCHIVES, recordings: tuple[Recording, ...] = RECORDINGS,
          left_out: dict[str, dict[str, str]] = LEFT_OUT, held_out: frozenset[str] = HELD_OUT_MAKERS,
          say=log.info) -> dict:
    """Write every recording's cleaned frames to ``out``/SPLIT/RECORDING/FILE_NNNN.png (``height`` rows tall, or as
    the scanner wrote them) and ``out``/manifest.json.
    A file that cannot be decoded or cleaned is left out with its reason; nothing is written before both archives
    are verified."""
    out, cache = Path(out), Path(cache)
    media.refuse_existing(out / "manifest.json", overwrite)
    paths = {name: obtain(archives[name], cache, say) for name in sorted({r.archive for r in recordings})}
    rows, skipped = [], []
    for rec in recordings:
        archive = archives[rec.archive]
        folder = extract(archive, paths[rec.archive], rec.files, cache)
        split = split_of(rec, held_out)
        target = out / split / rec.id
        if target.is_dir():
            shutil.rmtree(target)  # made again whole: no frame of an earlier run with other settings stays
        files = []
        for name in rec.files:
            try:
                if not (folder / name).is_file():
                    raise FileNotFoundError(f"not in {archive.filename}")
                images, report = clean_file(folder / name, rec.views, min_change)
            except Exception as exc:  # one file that cannot be read must not end the set
                skipped.append({"archive": rec.archive, "file": name, "reason": f"{exc.__class__.__name__}: {exc}"})
                say(f"{rec.id}: {name} left out ({exc})")
                continue
            stem = Path(name).stem
            for index, image in enumerate(images):
                media.write_png(target / f"{stem}_{index:04d}.png", to_height(image, height))
            files.append({"file": name, **report})
            say(f"{rec.id}: {name}: {report['frames_kept']} of {report['distinct_frames'] * rec.views} distinct "
                f"images kept ({report['frames_not_clean']} not clean enough)")
        rows.append({**asdict(rec), "files": files, "split": split,
                     "frames": sum(f["frames_kept"] for f in files)})
    manifest = {
        "what": "real scanner frames, cleaned of their UI, split by scanner maker (usnst real-scanners)",
        "sources": [{**asdict(archives[n]), "url": f"https://pypi.org/project/{archives[n].package}/"
                     f"{archives[n].version}/"} for n in sorted(paths)],
        "min_change": min_change, "height": height, "held_out_makers": sorted(held_out),
        "recordings": rows, "left_out": [{"archive": a, "file": f, "reason": r} for a, files in left_out.items()
                                         for f, r in files.items()] + skipped,
        "frames": {s: sum(r["frames"] for r in rows if r["split"] == s) for s in ("train", "held_out")},
    }
    out.mkdir(parents=True, exist_ok=True)
    with media.atomic_path(out / "manifest.json") as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2))
    return manifest


def recording_frames(folder: str | Path, per_recording: int) -> tuple[list[np.ndarray], list[int], list[str]]:
    """(frames, the recording index of each, recording names) of one side of a set ``build`` wrote (``train`` or
    ``held_out``): at most ``per_recording`` frames of each recording, evenly spread, so one long cine does not
    stand for the whole side."""
    frames, groups, names = [], [], []
    for k, rec in enumerate(sorted(p for p in Path(folder).iterdir() if p.is_dir())):
        paths = media.image_files(rec)
        pick = np.unique(np.linspace(0, len(paths) - 1, min(per_recording, len(paths))).round().astype(int))
        frames += [media.read_gray(paths[i]) for i in pick]
        groups += [k] * len(pick)
        names.append(rec.name)
    if not frames:
        raise FileNotFoundError(f"no recordings in {folder}: make the set with `usnst real-scanners --out ...`")
    return frames, groups, names


KEEP_PER_RECORDING = 64  # frames of each recording: 262 real frames beside the phantom's 960 scenes
# (docs/lab/lq2hq_fast.md, stop 49)


def write_keep_triptychs(real: str | Path, out: str | Path, per_recording: int = KEEP_PER_RECORDING,
                         min_side: int = 128) -> int:
    """Write the training side of a set ``build`` wrote as LQ | HQ | label triptychs whose LQ and HQ panels are the
    real frame itself (a blank label panel): at most ``per_recording`` frames of each recording, evenly spread, and
    none narrower than ``min_side`` (the trainer's crop). Returns how many were written.

    Why: a net trained on the phantom alone maps whatever it is sent to the phantom's anatomy, so a frame that
    already looks like a scanner's came out with patches brightened or darkened where it is uniform (issue 27 item 5).
    Such a frame has nothing to be made more real at the anatomy's scale: its right output is itself, and these
    triptychs teach a net that beside the phantom's. The held-out side stays unseen, for the figures."""
    frames, groups, names = recording_frames(Path(real) / "train", per_recording)
    out = Path(out)
    if out.is_dir():
        shutil.rmtree(out)  # made again whole: no triptych of an earlier run with other settings stays
    written = 0
    for index, (frame, k) in enumerate(zip(frames, groups)):
        if min(frame.shape) < min_side:
            continue
        media.write_png(out / f"{names[k]}_{index:04d}.png", np.hstack([frame, frame, np.zeros_like(frame)]))
        written += 1
    return written
