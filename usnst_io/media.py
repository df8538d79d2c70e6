"""Reading and writing media: the one place that knows file suffixes, lists inputs, reads any frame sequence
(image folders, videos, DICOM stills and cines, ITK MetaImage/NRRD sequences, ``.usrec`` recordings) as grayscale frames with timestamps, and
writes PNGs, videos and any file atomically.

Every command reads and writes through here, so a new format or a fix to timestamps reaches all of them at once.
Frames are grayscale uint8 (H, W) unless said otherwise; a writer never leaves a half-written file where a good one
was (temp file in the same folder, then rename).
"""
from __future__ import annotations

import glob
import logging
import math
import os
import re
import struct
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from usnst_io import limits, protocol
from usnst_io.atomic import TEMP_MARK, atomic_path, is_temp

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v")
DICOM_SUFFIXES = (".dcm", ".dicom")
RECORDING_SUFFIXES = (".usrec",)
ITK_SUFFIXES = (".mha", ".nrrd")  # how PLUS and 3D Slicer store ultrasound sequences: frames stacked on the last axis
log = logging.getLogger(__name__)


# -- writing -----------------------------------------------------------------------------------------------
def refuse_existing(path: str | os.PathLike, overwrite: bool, what: str = "--out") -> None:
    """No command replaces a file it did not make in this run unless told to: one sentence saying what to do."""
    if not overwrite and os.path.lexists(path):
        raise ValueError(f"{path} exists: choose another {what}, or pass --overwrite to replace it")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] → uint8 0–255 (rounded, clipped); uint8 passes through."""
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(np.asarray(image, np.float64) * 255.0), 0, 255).astype(np.uint8)


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 0–255 → float32 in [0, 1]; float images pass through as float32."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0)
    return np.asarray(image, np.float32)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """An image (uint8, or float in [0, 1]) as a PNG, atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), to_uint8(image)):
            raise OSError(f"could not write {path}")
    return Path(path)


def write_video(frames: list[np.ndarray], path: str | os.PathLike, fps: float = 30.0) -> Path:
    """uint8 grayscale or BGR frames, one per period, to an MP4 or AVI file people can play, atomically."""
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    writer = TimedVideoWriter(path, fps)
    try:
        for i, frame in enumerate(frames):
            writer.add(i / fps, frame)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def write_frame_times(path: str | os.PathLike, names: list[str], times: list[float]) -> Path:
    """``file,t_s`` rows (a frame's file name and its seconds from the first frame), atomically: the timing that
    PNG frames of a sequence would otherwise lose."""
    import csv

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([("file", "t_s"), *((n, round(t, 6)) for n, t in zip(names, times))])
    return Path(path)


class H264Writer:
    """An MP4 that browsers, phones and slide decks play: H.264 (yuv420p) through PyAV's FFmpeg. OpenCV's pip
    build can only write MPEG-4 Part 2 into .mp4, which browsers refuse. The same ``write``/``release`` as OpenCV's
    writer; odd sizes are padded by one black row or column (yuv420p needs even sides)."""

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int]):
        import av

        self._container = av.open(str(path), mode="w", format="mp4")
        self._stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        width, height = size
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": "18", "preset": "veryfast"}  # visually lossless speckle, quick to encode
        self._av = av

    def write(self, bgr: np.ndarray) -> None:
        h, w = bgr.shape[:2]
        if (w, h) != (self._stream.width, self._stream.height):
            bgr = cv2.copyMakeBorder(bgr, 0, self._stream.height - h, 0, self._stream.width - w, cv2.BORDER_CONSTANT)
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def release(self) -> None:
        for packet in self._stream.encode():  # flush the encoder's delayed frames
            self._container.mux(packet)
        self._container.close()


def open_video_writer(path: str | os.PathLike, fps: float, size: tuple[int, int]):
    """A writer for BGR frames of ``size`` (width, height): H.264 for .mp4 (H264Writer), MJPG in .avi otherwise."""
    if str(path).lower().endswith(".mp4"):
        return H264Writer(path, fps, size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        writer.release()
        raise OSError(f"cannot write video {path}")
    return writer


class TimedVideoWriter:
    """A fixed-rate video in which each frame appears at its own timestamp: a frame is repeated until the next one's
    time comes, and of frames closer together than one period the last wins. A 20 s session is then a 20 s video,
    however irregularly its frames came (one file frame per received frame made 20 s of a slow stream 0.93 s).
    Written to a temp file and renamed on ``close`` (atomic, like every writer here)."""

    # A pause longer than this is shown for this long: a recording whose clock jumped (a bit flip, a clock step)
    # would otherwise write without end (one jump of 10⁹ s is 30 billion frames).
    MAX_HOLD_S = 5.0

    def __init__(self, path: str | os.PathLike, fps: float = 30.0):
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}")
        self.path, self.fps = Path(path), fps
        self._stack = ExitStack()
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None  # (width, height) of the video: the first frame's
        self._last = None
        self._shift = 0.0  # seconds taken out of over-long pauses so far
        self._t0 = self._t_last = None
        self.written = 0
        self.gaps_shortened = 0
        self.resized = 0

    def add(self, t: float, frame: np.ndarray) -> None:
        """``frame`` (grey or BGR uint8) shown from time ``t`` seconds (any origin; non-decreasing). A frame of
        another size than the first is fitted into the video's size (letterboxed; counted in ``resized``)."""
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame
        if self._writer is None:
            tmp = self._stack.enter_context(atomic_path(self.path))
            self._size = (frame.shape[1], frame.shape[0])
            self._writer = open_video_writer(tmp, self.fps, self._size)
            self._t0 = self._t_last = t
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = letterbox(frame, self._size)
            self.resized += 1
        if not math.isfinite(t):
            t = self._t_last
        if t - self._t_last > self.MAX_HOLD_S:
            self._shift += t - self._t_last - self.MAX_HOLD_S
            self.gaps_shortened += 1
        self._t_last = max(t, self._t_last)
        due = int(round((t - self._shift - self._t0) * self.fps))  # the file frame at which this frame starts
        while self._last is not None and self.written < due:
            self._writer.write(self._last)
            self.written += 1
        self._last = frame

    def close(self) -> Path | None:
        """Write the last frame and move the file into place; None if no frame was ever added."""
        if self._writer is None:
            return None
        self._writer.write(self._last)
        self.written += 1
        self._writer.release()
        self._stack.close()
        return self.path

    def abort(self) -> None:
        """Drop the partial file (an error mid-way)."""
        if self._writer is not None:
            self._writer.release()
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


def letterbox(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` scaled to fit ``size`` (width, height) whole, centred on black."""
    w, h = size
    scale = min(w / frame.shape[1], h / frame.shape[0])
    fw, fh = max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale))
    out = np.zeros((h, w) + frame.shape[2:], frame.dtype)
    y, x = (h - fh) // 2, (w - fw) // 2
    out[y:y + fh, x:x + fw] = cv2.resize(frame, (fw, fh), interpolation=cv2.INTER_AREA)
    return out


def frame_png_paths(out_stem: Path, frames: int) -> list[Path]:
    """Where the frames of one input go as PNGs: ``NAME.png`` for a still, ``NAME_0000.png``… for a sequence, NAME
    being ``out_stem``'s whole name."""
    if frames == 1:
        return [out_stem.with_name(out_stem.name + ".png")]
    return [out_stem.with_name(f"{out_stem.name}_{i:04d}.png") for i in range(frames)]


# -- reading -----------------------------------------------------------------------------------------------
def image_dimensions(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) from an image file's header — PNG, JPEG, BMP or TIFF — without decoding it; None for other
    formats (OpenCV's own pixel limit, set from ours, is their backstop)."""
    with open(path, "rb") as f:
        head = f.read(32)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if head[:2] == b"BM" and len(head) >= 26:
            width, height = struct.unpack("<ii", head[18:26])
            return abs(width), abs(height)
        if head[:2] == b"\xff\xd8":
            return _jpeg_dimensions(f)
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_dimensions(f, "<" if head[:2] == b"II" else ">")
    return None


def _jpeg_dimensions(f) -> tuple[int, int] | None:
    f.seek(2)
    while True:
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        if marker[1] in (0xD8, 0x01) or 0xD0 <= marker[1] <= 0xD7:  # markers without a length
            continue
        length = struct.unpack(">H", f.read(2) or b"\0\0")[0]
        if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):  # a start of frame
            height, width = struct.unpack(">xHH", f.read(5))
            return width, height
        if length < 2:
            return None
        f.seek(length - 2, 1)


def _tiff_dimensions(f, order: str) -> tuple[int, int] | None:
    f.seek(4)
    (offset,) = struct.unpack(order + "I", f.read(4))
    f.seek(offset)
    raw = f.read(2)
    if len(raw) < 2:
        return None
    found = {}
    for _ in range(struct.unpack(order + "H", raw)[0]):
        entry = f.read(12)
        if len(entry) < 12:
            break
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12])[0]
    return (found[256], found[257]) if len(found) == 2 else None


def _decode(path: str | os.PathLike, flags: int) -> np.ndarray:
    """One image, its announced size checked against the limits before OpenCV allocates it."""
    try:
        size = image_dimensions(path)
    except (OSError, struct.error):
        size = None
    if size is not None:
        limits.check_image(*size, what=str(path))
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(limits.max_image_pixels()))  # formats read above: none
    try:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # OpenCV's own limit, for a format whose header we did not read
        raise limits.TooLarge(f"{path}: {(str(exc).strip().splitlines() or ['too large'])[-1]} (set "
                              "USNST_MAX_IMAGE_PIXELS to allow more)") from None
    if img is None:
        raise OSError(f"cannot read image {path}")
    img = _to_8_bits(img, path)
    if img.ndim == 3 and img.shape[2] == 4:  # transparent means no echo: over black, as a scanner shows it
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        img = np.rint(img[:, :, :3] * alpha).astype(np.uint8)
    if flags == cv2.IMREAD_GRAYSCALE:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    return img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)


def _to_8_bits(img: np.ndarray, path) -> np.ndarray:
    """Any depth to uint8. 16-bit data often holds 10, 12 or 14 significant bits (a 12-bit scanner export in a
    16-bit PNG came out nearly black when shifted down by 8): the PNG's sBIT chunk says how many, else the smallest
    of 8/10/12/14/16 bits that holds the image's largest value."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        bits = _png_significant_bits(path) or next(b for b in (8, 10, 12, 14, 16) if int(img.max()) < 1 << b)
        return np.clip(np.rint(img.astype(np.float32) * (255.0 / ((1 << bits) - 1))), 0, 255).astype(np.uint8)
    img = img.astype(np.float32)
    return to_uint8(np.clip(img / 255.0 if img.max() > 1.0 else img, 0.0, 1.0))


def _png_significant_bits(path) -> int | None:
    try:
        with open(path, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            while True:
                head = f.read(8)
                if len(head) < 8:
                    return None
                length, kind = struct.unpack(">I4s", head)
                if kind == b"sBIT":
                    return max(f.read(length)) or None
                if kind in (b"IDAT", b"IEND"):
                    return None
                f.seek(length + 4, 1)
    except (OSError, ValueError, struct.error):
        return None


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """One image file as grayscale uint8 (any bit depth scaled to its significant bits; transparency over black)."""
    return _decode(path, cv2.IMREAD_GRAYSCALE)


def read_color(path: str | os.PathLike) -> np.ndarray:
    """One image file as RGB uint8 (screenshots keep their colour overlays)."""
    return cv2.cvtColor(_decode(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not is_temp(path)


def is_still_or_dicom(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES and not is_temp(path)


def is_stylizable(path: Path) -> bool:
    """What batch stylization takes: stills, DICOM, videos, ITK sequences and recordings."""
    return (path.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES + VIDEO_SUFFIXES + ITK_SUFFIXES + RECORDING_SUFFIXES
            and not is_temp(path))


def image_files(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """The image files of a folder in name order (recursively by default); an error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    paths = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir()) if is_image(p))
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return paths


def list_inputs(spec: str | os.PathLike, accept=is_still_or_dicom) -> tuple[Path, list[Path]]:
    """(base folder, sorted input paths): a folder is searched recursively; anything else is a glob pattern (or one
    file) whose base is the part before its first wildcard. Outputs keep each input's path relative to the base.

    Each file is listed once, by its shortest path: a glob through a symlink loop would otherwise list one image
    under endless names. An empty ``spec`` is refused (it would have meant the current folder)."""
    spec = str(spec)
    if not spec.strip():
        raise ValueError("no inputs given: name a folder, a file or a glob pattern")
    p = Path(spec)
    if p.is_dir():
        base, paths = p, [q for q in p.rglob("*") if q.is_file()]
    else:
        parts = p.parts
        fixed = list(parts[: next((i for i, x in enumerate(parts) if any(c in x for c in "*?[")), len(parts))])
        base = Path(*fixed) if fixed else Path(".")
        if base == p:  # a single file
            base = p.parent
        paths = [Path(q) for q in glob.glob(spec, recursive=True) if Path(q).is_file()]
    temp = [q for q in paths if is_temp(q)]
    if temp:
        log.warning("skipping %d file(s) named like usnst's unfinished writes (.NAME%sPID…), e.g. %s", len(temp),
                    TEMP_MARK, temp[0])
    seen: dict[str, Path] = {}
    for q in sorted((q for q in paths if accept(q)), key=lambda q: (len(q.parts), str(q))):
        seen.setdefault(os.path.realpath(q), q)
    paths = sorted(seen.values())
    if not paths:
        raise FileNotFoundError(f"no inputs found for {spec!r}")
    return base, paths


@dataclass(frozen=True)
class BatchItem:
    """One input of a batch and where its outputs go: every output file is named from ``out_stem`` (``NAME.png``,
    ``NAME_0000.png``…, ``NAME.dcm``)."""

    input: Path
    rel: Path  # the input's path below the base folder, as the reports name it
    out_stem: Path

    def output(self, suffix: str) -> Path:
        return self.out_stem.with_name(self.out_stem.name + suffix)


def plan_batch(spec: str | os.PathLike, out: str | os.PathLike, accept=is_still_or_dicom) -> list[BatchItem]:
    """The inputs of a batch command and their outputs under ``out``, keeping the folder structure, made safe
    before anything is written:

    - files already under ``out`` are not inputs (an output folder inside the input folder is not re-read);
    - an input whose path leaves the base folder (a glob with ``..``) is refused: its output would leave ``out``;
    - inputs whose names differ only in suffix (``same.jpg``, ``same.png``) would write one output: each keeps its
      whole name instead (``same.jpg.png``, ``same.png.png``), logged;
    - ``out`` may not be the input folder itself, where outputs would replace inputs.
    The plan is made over the whole list, so shards agree on every name."""
    base, paths = list_inputs(spec, accept)
    out = Path(out)
    out_real = Path(os.path.realpath(out))
    if out_real == Path(os.path.realpath(base)):
        raise ValueError(f"--out {out} is the input folder: outputs would replace the inputs; choose another --out")
    inside = [q for q in paths if Path(os.path.realpath(q)).is_relative_to(out_real)]
    if inside:
        log.info("not reading %d file(s) under the output folder %s", len(inside), out)
        paths = [q for q in paths if q not in inside]
        if not paths:
            raise FileNotFoundError(f"no inputs found for {str(spec)!r} outside the output folder {out}")
    rels = [Path(os.path.normpath(q.relative_to(base))) for q in paths]
    escaping = [str(q) for q, r in zip(paths, rels) if r.parts[:1] == ("..",)]
    if escaping:
        raise ValueError(f"{escaping[0]} lies outside {base} (a pattern with '..'), so its output would land outside "
                         f"--out {out}: give a pattern whose fixed part holds every input")
    stems: dict[tuple[Path, str], list[Path]] = {}
    for r in rels:
        stems.setdefault((r.parent, r.stem), []).append(r)
    items = []
    for q, r in zip(paths, rels):
        clash = stems[(r.parent, r.stem)]
        items.append(BatchItem(q, r, out / r.parent / (r.name if len(clash) > 1 else r.stem)))
    for (parent, stem), clash in stems.items():
        if len(clash) > 1:
            log.warning("%s share the output name %s: each is written under its whole name (%s)",
                        " and ".join(c.name for c in clash), stem, ", ".join(c.name + ".png" for c in clash))
    return items


def read_stills(path: str | os.PathLike) -> list[np.ndarray]:
    """Grayscale images from an image file, a DICOM file or a folder of either (searched recursively); every frame
    of a DICOM cine counts as one image (style sets, screenshot sets)."""
    path = Path(path)
    if path.is_dir():
        paths = sorted(p for p in path.rglob("*") if is_still_or_dicom(p))
        if not paths:
            raise FileNotFoundError(f"no images or DICOM files in {path}")
    elif path.is_file():
        paths = [path]
    else:
        raise FileNotFoundError(f"no such image or folder: {path}")
    from usnst_io.dicom import read_dicom

    images = []
    for p in paths:
        images += read_dicom(p).frames if p.suffix.lower() in DICOM_SUFFIXES else [read_gray(p)]
    return images


@dataclass
class Sequence:
    """Frames of one sequence with their times in seconds from the first frame, and what the file said about it."""

    frames: list[np.ndarray]
    times: list[float]
    fps: float | None = None  # the rate the source declares, if any
    meta: dict = field(default_factory=dict)  # e.g. spacing_mm, DICOM photometric interpretation
    problems: list[str] = field(default_factory=list)  # what reading lost (a damaged recording's skipped records)
    poses: list = field(default_factory=list)  # per frame: the 4×4 image-to-world pose a recording carried, or None
    spacings: list = field(default_factory=list)  # per frame: its (row, column) pixel spacing in mm, or None

    def __len__(self) -> int:
        return len(self.frames)


def sequence_kind(path: str | os.PathLike) -> str:
    """'images' (a folder), 'video', 'itk', 'dicom' or 'recording' — how ``read_sequence`` will read ``path``."""
    path = Path(path)
    if path.is_dir():
        return "images"
    if not path.exists():
        raise FileNotFoundError(f"no such sequence: {path}")
    from usnst_io.dicom import is_dicom
    from usnst_io.recording import is_recording

    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in ITK_SUFFIXES:
        return "itk"
    if suffix in RECORDING_SUFFIXES:
        return "recording"
    if suffix in DICOM_SUFFIXES or is_dicom(path):
        return "dicom"
    if is_recording(path):
        return "recording"
    raise ValueError(f"{path}: not a folder of images, a video ({', '.join(VIDEO_SUFFIXES)}), an ITK sequence "
                     f"({', '.join(ITK_SUFFIXES)}), a DICOM file or a usnst recording ({', '.join(RECORDING_SUFFIXES)})")


def _itk_header(data: bytes, path) -> tuple[dict[str, str], bytes]:
    """(fields, payload) of a MetaImage (``Key = value`` lines up to ``ElementDataFile = LOCAL``) or an NRRD file
    (``key: value`` lines up to a blank line), keys lower-cased."""
    if data.startswith(b"NRRD"):
        end = data.find(b"\n\n")
        if end < 0:
            raise ValueError(f"{path}: NRRD header without the blank line that ends it")
        lines, payload, sep = data[:end].decode("latin-1").splitlines()[1:], data[end + 2:], ":"
    else:
        mark = re.search(rb"ElementDataFile\s*=\s*(\S+)\r?\n", data)
        if mark is None:
            raise ValueError(f"{path}: not a MetaImage file (no ElementDataFile line)")
        if mark.group(1) != b"LOCAL":
            raise ValueError(f"{path}: its pixels are in another file ({mark.group(1).decode()}): read the .mhd")
        lines, payload, sep = data[:mark.start()].decode("latin-1").splitlines(), data[mark.end():], "="
    fields = {}
    for line in lines:
        if sep in line and not line.startswith("#"):
            key, value = line.split(sep, 1)
            fields[key.strip().lower()] = value.strip()
    return fields, payload


def read_itk_frames(path: str | os.PathLike) -> list[np.ndarray]:
    """The 2-D frames of an 8-bit MetaImage (``.mha``) or NRRD file, raw or compressed. Only 8-bit single-channel
    data is read: that is what ultrasound sequence recorders write, and a guess at another scaling would be silent."""
    import gzip
    import zlib

    data = Path(path).read_bytes()
    fields, payload = _itk_header(data, path)
    nrrd = data.startswith(b"NRRD")
    kind = fields.get("type" if nrrd else "elementtype", "")
    channels = int(fields.get("elementnumberofchannels", "1"))
    if kind not in ("unsigned char", "uchar", "uint8", "uint8_t", "MET_UCHAR") or channels != 1:
        raise ValueError(f"{path}: {kind or 'unknown'} data with {channels} channel(s): only 8-bit grey is read")
    sizes = [int(v) for v in fields.get("sizes" if nrrd else "dimsize", "").split()]
    if len(sizes) not in (2, 3):
        raise ValueError(f"{path}: {len(sizes)}-D data: expected 2-D frames, or frames stacked on a third axis")
    width, height, frames = sizes[0], sizes[1], sizes[2] if len(sizes) == 3 else 1
    limits.check_image(width, height, str(path), frames)
    if nrrd and fields.get("encoding", "raw") in ("gzip", "gz"):
        payload = gzip.decompress(payload)
    elif nrrd and fields.get("encoding", "raw") != "raw":
        raise ValueError(f"{path}: NRRD encoding {fields['encoding']!r}: raw and gzip are read")
    elif not nrrd and fields.get("compresseddata", "False").lower() == "true":
        payload = zlib.decompress(payload)
    if len(payload) < width * height * frames:
        raise ValueError(f"{path}: {len(payload):,} bytes of pixels where its header announces "
                         f"{width * height * frames:,}: a truncated file?")
    volume = np.frombuffer(payload[:width * height * frames], np.uint8).reshape(frames, height, width)
    return [np.array(frame) for frame in volume]


def iter_sequence(path: str | os.PathLike, fps: float | None = None, problems: list[str] | None = None,
                  colour: bool = False) -> Iterator[tuple[float, np.ndarray, dict]]:
    """``(t, frame, meta)`` for each frame of a sequence, lazily: ``t`` in seconds from the first frame, by the
    source's own timing (video and DICOM frame rate, a recording's receive times; image folders have none and go
    at 30 frames/s) unless ``fps`` is given. Frames are grayscale uint8 except a recording's, which keep their wire
    dtype and channels, and, with ``colour``, images, videos and colour DICOM, which come as RGB (screenshot
cleaning finds overlays by their colour). Unreadable files in a folder are skipped; a folder with none readable is an error. A damaged
    or truncated recording yields its whole records and, at its end, says what was lost in ``problems``."""
    path = Path(path)
    kind = sequence_kind(path)
    if kind == "images":
        rate, index = fps or 30.0, 0
        for p in image_files(path, recursive=False):
            try:
                img = read_color(p) if colour else read_gray(p)
            except (OSError, limits.TooLarge) as exc:  # one bad file does not end the sequence
                log.warning("skipping %s: %s", p, exc)
                continue
            yield index / rate, img, {"source": p.name}
            index += 1
        if index == 0:
            raise ValueError(f"{path}: no readable images")
    elif kind == "video":
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise FileNotFoundError(f"cannot open video {path}")
        rate = fps or cap.get(cv2.CAP_PROP_FPS) or 30.0
        try:
            limits.check_image(int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), str(path))
            index = 0
            while True:
                ok, img = cap.read()
                if not ok:
                    break
                if img.ndim == 3:
                    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB if colour else cv2.COLOR_BGR2GRAY)
                yield index / rate, img, {"source": path.name, "frame_index": index}
                index += 1
        finally:
            cap.release()
        if index == 0:
            raise ValueError(f"{path}: no frames could be decoded")
    elif kind == "dicom":
        from usnst_io.dicom import pixel_spacing_mm, read_dicom

        series = read_dicom(path, colour=colour)
        rate = fps or series.fps or 1.0  # a still has no rate: one frame a second
        meta = {"source": path.name, "dicom_photometric": series.photometric}
        spacing = pixel_spacing_mm(series.dataset)
        if spacing:
            meta[protocol.SPACING_MM] = list(spacing)
        for index, img in enumerate(series.frames):
            yield index / rate, img, {**meta, "frame_index": index}
    elif kind == "itk":
        rate = fps or 30.0  # the files carry no frame rate
        for index, img in enumerate(read_itk_frames(path)):
            yield index / rate, img, {"source": path.name, "frame_index": index}
    else:
        from usnst_io.recording import RecordingReader

        first, index = None, 0
        reader = RecordingReader(path)
        for msg in reader:
            frame = protocol.decode(msg.parts, check_finite=False)
            if isinstance(frame, protocol.Rejected):
                continue
            first = msg.recv_ns if first is None else first
            t = index / fps if fps else (msg.recv_ns - first) / 1e9
            yield t, frame.pixels, {**frame.meta, "seq": frame.seq, "capture_ns": frame.capture_ns}
            index += 1
        if problems is not None and reader.status != "complete":
            problems.append(f"{path}: {reader.status}")


def read_sequence(path: str | os.PathLike, fps: float | None = None) -> Sequence:
    """A whole sequence in memory (see ``iter_sequence``); recording frames are converted to grayscale uint8."""
    frames, times, meta, problems, poses, spacings, bad = [], [], {}, [], [], [], {"pose": 0, "spacing": 0}
    for t, img, m in iter_sequence(path, fps, problems):
        frames.append(gray_uint8(img))
        times.append(t)
        meta = meta or m
        for kept, read, what, fallback in ((poses, protocol.image_to_world, "pose", "placed by their estimated motion"),
                                           (spacings, protocol.spacing_mm, "spacing", "given the model's grain size")):
            try:
                kept.append(read(m))
            except ValueError as exc:  # the frame is kept, without what it carried wrong
                kept.append(None)
                bad[what] += 1
                if bad[what] == 1:
                    log.warning("%s: frame %d: %s; such frames are %s", path, len(frames) - 1, exc, fallback)
    if not frames:
        raise ValueError(f"{path}: no frames")
    declared = fps
    if declared is None and len(times) > 1 and times[-1] > 0:
        declared = (len(times) - 1) / times[-1]
    return Sequence(frames, times, declared, meta, problems, poses, spacings)


def gray_uint8(pixels: np.ndarray) -> np.ndarray:
    """Any wire frame (uint8/uint16/float32 in [0, 1], 1 or 3 channels) → grayscale uint8 for offline tools and
    display: uint16 keeps its high byte, float is scaled from [0, 1], colour becomes its channel mean."""
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        pixels = to_uint8(np.clip(pixels, 0.0, 1.0))
    if pixels.ndim == 3:
        pixels = pixels[:, :, 0] if pixels.shape[2] == 1 else np.rint(pixels.mean(axis=2)).astype(np.uint8)
    return pixels
