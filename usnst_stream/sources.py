"""Where published frames come from: the phantom simulator, a recording, a folder of images, a video.

Every source yields ``(t, parts)``: ``t`` is the frame's time in seconds on the source's own clock (from
its first frame), ``parts`` the multipart message to send. The publisher paces by ``t``; a source has no
notion of sockets or wall-clock time, which keeps each testable alone.
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from usnst_stream import protocol
from usnst_stream.phantom import PhantomRenderer, ProbeGeometry, probe_pose, to_uint8
from usnst_stream.recording import RecordingReader

log = logging.getLogger(__name__)

Timed = tuple[float, list]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v"}
QUALITIES = ("lq", "hq", "seg")


def _encode(seq: int, pixels: np.ndarray, meta: dict, topic: bytes = protocol.INPUT_TOPIC) -> list:
    return protocol.encode(protocol.Frame(seq, protocol.now_ns(), pixels, meta, topic=topic))


def convert_dtype(img8: np.ndarray, dtype: str) -> np.ndarray:
    """uint8 image → the wire dtype a simulator may use (uint16 scaled to full range, float32 in [0, 1])."""
    if dtype == "uint8":
        return img8
    if dtype == "uint16":
        return img8.astype(np.uint16) * np.uint16(257)
    if dtype == "float32":
        return img8.astype(np.float32) / np.float32(255.0)
    raise ValueError(f"dtype must be one of {', '.join(protocol.DTYPES)}, got {dtype!r}")


def phantom_stream(height: int, width: int, fps: float, quality: str = "lq", seed: int = 0,
                   dtype: str = "uint8", keep=None) -> Iterator[Timed]:
    """An endless simulated scan: frame i shows the scene at t = i / fps with the probe drifting.

    ``keep(seq, sample)``, if given, receives every rendered sample (the demo keeps HQ references)."""
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
    renderer = PhantomRenderer(height, width, seed=seed)
    geometry: ProbeGeometry = renderer.geometry
    for seq in itertools.count():
        t = seq / fps
        sample = renderer.render(t)
        if keep is not None:
            keep(seq, sample)
        img = sample.seg if quality == "seg" else to_uint8(getattr(sample, quality))
        ax, ay, rot = probe_pose(t)
        meta = {"source": "usnst-phantom", "quality": quality, "scene_seed": seed,
                "spacing_mm": [round(renderer.pixel_mm, 6)] * 2,
                "probe": {"apex_mm": [round(ax, 4), round(ay, 4)], "angle_rad": round(rot, 6),
                          "sector_deg": geometry.sector_deg, "depth_mm": geometry.depth_mm}}
        yield t, _encode(seq, convert_dtype(img, dtype), meta)


def recording_stream(path: str | Path, restamp: bool = False) -> Iterator[Timed]:
    """Messages of a recording at their recorded spacing. With ``restamp`` each valid frame's capture_ns is
    set to the moment it is re-sent (so live latency figures stay meaningful); otherwise bytes are sent as
    recorded."""
    reader = RecordingReader(path)
    first = None
    for msg in reader:
        first = msg.recv_ns if first is None else first
        parts = msg.parts
        if restamp:
            frame = protocol.decode(parts)
            if isinstance(frame, protocol.Frame):
                frame.capture_ns = protocol.now_ns()
                parts = protocol.encode(frame)
        yield (msg.recv_ns - first) / 1e9, parts


def image_folder_stream(folder: str | Path, fps: float) -> Iterator[Timed]:
    """The images of a folder in name order, as grayscale uint8 frames at ``fps``."""
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    seq = 0
    for path in paths:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            log.warning("skipping unreadable image %s", path)
            continue
        yield seq / fps, _encode(seq, img, {"source": path.name})
        seq += 1


def video_stream(path: str | Path, fps: float | None = None) -> Iterator[Timed]:
    """The frames of a video file as grayscale uint8, at the file's own rate unless ``fps`` is given."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    rate = fps or cap.get(cv2.CAP_PROP_FPS) or 30.0
    try:
        for seq in itertools.count():
            ok, img = cap.read()
            if not ok:
                return
            if img.ndim == 3:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            yield seq / rate, _encode(seq, img, {"source": Path(path).name, "frame_index": seq})
    finally:
        cap.release()


def dicom_stream(path: str | Path, fps: float | None = None) -> Iterator[Timed]:
    """The frames of a DICOM file (a cine loop or a still) as grayscale uint8, at the file's recorded frame
    rate unless ``fps`` is given (a still, which has none, goes at 1 frame/s)."""
    from usnst_io.dicom import read_dicom

    series = read_dicom(path)
    rate = fps or series.fps or 1.0
    spacing = series.dataset.get("PixelSpacing")
    meta = {"source": Path(path).name, "dicom_photometric": series.photometric}
    if spacing:
        meta["spacing_mm"] = [float(spacing[0]), float(spacing[1])]
    for seq, img in enumerate(series.frames):
        yield seq / rate, _encode(seq, img, {**meta, "frame_index": seq})


def open_source(path: str | Path, fps: float | None = None, restamp: bool = False) -> Iterator[Timed]:
    """A recording (.usrec or any file with the recording header), an image folder, a video or a DICOM file."""
    from usnst_io.dicom import DICOM_SUFFIXES, is_dicom

    path = Path(path)
    if path.is_dir():
        return image_folder_stream(path, fps or 30.0)
    if not path.exists():
        raise FileNotFoundError(f"nothing to replay at {path}")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return video_stream(path, fps)
    if path.suffix.lower() in DICOM_SUFFIXES or is_dicom(path):
        return dicom_stream(path, fps)
    source = recording_stream(path, restamp)
    return retime(source, fps) if fps else source


def retime(source: Iterable[Timed], fps: float) -> Iterator[Timed]:
    """Replace a source's own timing with a fixed rate."""
    for i, (_, parts) in enumerate(source):
        yield i / fps, parts


def looped(make_source, times: int | None = None) -> Iterator[Timed]:
    """Play ``make_source()`` again and again (``times`` in all, None for ever), times continuing."""
    offset, played = 0.0, 0
    while times is None or played < times:
        last_t, step, any_item = 0.0, 0.0, False
        for t, parts in make_source():
            any_item = True
            step = t - last_t if t > last_t else step
            last_t = t
            yield offset + t, parts
        if not any_item:
            return
        offset += last_t + (step if step > 0 else 1 / 30)
        played += 1


def limited(source: Iterable[Timed], frames: int | None = None, duration: float | None = None) -> Iterator[Timed]:
    """Stop after ``frames`` messages or once ``duration`` seconds of source time have passed."""
    for i, (t, parts) in enumerate(source):
        if (frames is not None and i >= frames) or (duration is not None and t >= duration):
            return
        yield t, parts
