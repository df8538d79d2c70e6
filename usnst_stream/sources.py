"""Where published frames come from: the phantom simulator, a recording, a folder of images, a video.

Every source yields ``(t, parts)``: ``t`` is the frame's time in seconds on the source's own clock (from
its first frame), ``parts`` the multipart message to send. The publisher paces by ``t``; a source has no
notion of sockets or wall-clock time, which keeps each testable alone.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from usnst_io import media, protocol
from usnst_io.media import to_uint8
from usnst_io.recording import RecordingReader
from usnst_stream.phantom import PhantomRenderer, ProbeGeometry, probe, probe_pose

Timed = tuple[float, list]
QUALITIES = ("lq", "hq", "seg")
SENDS = ("pose", "spacing", "nothing")  # what a phantom frame tells the node of its geometry (phantom_stream)


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
                   dtype: str = "uint8", keep=None, loop_frames: int = 0,
                   probe_kind: str | None = None, formation: str = "gaussian",
                   anatomy: str = "fetal", sends: str = SENDS[0]) -> Iterator[Timed]:
    """An endless simulated scan: frame i shows the scene at t = i / fps with the probe drifting.

    ``loop_frames`` > 0 renders that many frames before the first is sent and then plays them in a loop (sequence
    numbers and times keep counting): rendering a 512² phantom costs about a frame period on 2 cores, so a
    stand-in simulator rendering live falls behind its own rate and becomes the bottleneck it is meant to test.
    ``keep(seq, sample)``, if given, receives every sample as it is sent (the demo keeps HQ references).

    ``sends``: what each frame's meta says of its geometry, as simulators differ: its pose and pixel spacing
    (``pose``: the node places the grain exactly), its pixel spacing alone (``spacing``: the motion is estimated from
    the frames), or ``nothing`` (the motion estimated, the grain at the model's own size)."""
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
    if sends not in SENDS:
        raise ValueError(f"sends must be one of {SENDS}, got {sends!r}")
    geometry = ProbeGeometry() if probe_kind is None else probe(probe_kind)
    renderer = PhantomRenderer(height, width, seed=seed, geometry=geometry, formation=formation, anatomy=anatomy)

    def frame(i: int):
        t = i / fps
        sample = renderer.render(t)
        img = sample.seg if quality == "seg" else to_uint8(getattr(sample, quality))
        meta = {"source": "usnst-phantom", "quality": quality, "scene_seed": seed, "formation": formation,
                "anatomy": anatomy, "probe": {"kind": geometry.kind, "sector_deg": geometry.sector_deg,
                                              "depth_mm": geometry.depth_mm}}
        if sends != "nothing":
            meta[protocol.SPACING_MM] = [round(renderer.pixel_mm, 6)] * 2
        if sends == "pose":
            ax, ay, rot = probe_pose(t)
            meta["probe"].update(apex_mm=[round(ax, 4), round(ay, 4)], angle_rad=round(rot, 6))
            meta[protocol.IMAGE_TO_WORLD] = [round(float(v), 9) for v in renderer.image_to_world(t).ravel()]
        return sample, convert_dtype(img, dtype), meta

    loop = [frame(i) for i in range(loop_frames)]
    for seq in itertools.count():
        sample, img, meta = loop[seq % len(loop)] if loop else frame(seq)
        if keep is not None:
            keep(seq, sample)
        yield seq / fps, _encode(seq, img, meta)


def recording_stream(path: str | Path, restamp: bool = False) -> Iterator[Timed]:
    """Messages of a recording at their recorded spacing. With ``restamp`` each valid frame's capture_ns is
    set to the moment it is re-sent (so live latency figures stay meaningful); otherwise bytes are sent as
    recorded."""
    reader = RecordingReader(path)
    first = None
    for msg in reader:
        first = msg.recv_ns if first is None else first
        yield (msg.recv_ns - first) / 1e9, protocol.restamp(msg.parts) if restamp else msg.parts


def file_stream(path: str | Path, fps: float | None = None) -> Iterator[Timed]:
    """An image folder (name order, 30 frames/s unless ``fps``), a video (its own rate) or a DICOM still or cine
    (its recorded rate; a still goes at 1 frame/s), read by usnst_io.media, as grayscale uint8 frames."""
    for seq, (t, img, meta) in enumerate(media.iter_sequence(path, fps)):
        yield t, _encode(seq, img, meta)


def open_source(path: str | Path, fps: float | None = None, restamp: bool = False) -> Iterator[Timed]:
    """A recording (.usrec or any file with the recording header), an image folder, a video or a DICOM file.
    A recording replays its messages byte for byte; other sources are read (and fail) on opening."""
    if not Path(path).exists():
        raise FileNotFoundError(f"nothing to replay at {path}")
    kind = media.sequence_kind(path)
    if kind == "recording":
        source = recording_stream(path, restamp)
        return retime(source, fps) if fps else source
    return file_stream(path, fps)


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
