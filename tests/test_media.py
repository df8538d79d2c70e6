"""usnst_io.media: one reader for every sequence kind (with timestamps), inputs listed once, atomic writes."""
import gzip
import zlib

import cv2
import numpy as np
import pytest

from usnst_io import atomic, media, protocol
from usnst_io.recording import RecordingWriter


def _frames(n=4, h=24, w=32):
    return [np.full((h, w), 30 * i + 10, np.uint8) for i in range(n)]


def test_an_atomic_write_replaces_whole_or_leaves_the_old_file(tmp_path):
    target = tmp_path / "sub" / "a.png"
    media.write_png(target, np.full((8, 9), 100, np.uint8))
    assert media.read_gray(target).max() == 100
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("killed mid-write")
    assert media.read_gray(target).max() == 100  # the good file is still there
    assert [p.name for p in target.parent.iterdir()] == ["a.png"]  # and no temp file is left


def test_stale_temp_files_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    import os

    dead, live = tmp_path / ".x.png.usnst-tmp999999999.png", tmp_path / f".y.png.usnst-tmp{os.getpid()}.png"
    dead.write_bytes(b"x")
    live.write_bytes(b"y")
    assert atomic.remove_stale_temp_files(tmp_path) == 1
    assert not dead.exists() and live.exists()


def test_image_folders_videos_dicom_and_recordings_read_as_timed_frames(tmp_path):
    folder = tmp_path / "frames"
    for i, f in enumerate(_frames()):
        media.write_png(folder / f"f{i}.png", f)
    seq = media.read_sequence(folder, fps=10)
    assert len(seq) == 4 and seq.times == pytest.approx([0, 0.1, 0.2, 0.3]) and seq.frames[2].max() == 70

    video = media.write_video(_frames(), tmp_path / "v.avi", fps=12)
    seq = media.read_sequence(video)
    assert len(seq) == 4 and seq.times[1] == pytest.approx(1 / 12) and abs(int(seq.frames[3].mean()) - 100) <= 3

    rec = tmp_path / "run.usrec"
    with RecordingWriter(rec) as writer:
        for i, f in enumerate(_frames()):
            pixels = (f.astype(np.uint16) * 257)[:, :, None]  # uint16 on the wire
            writer.write(1_000_000_000 + i * 50_000_000, protocol.encode(protocol.Frame(i, 0, pixels, {"k": i})))
    assert media.sequence_kind(rec) == "recording"
    seq = media.read_sequence(rec)
    assert seq.times == pytest.approx([0, 0.05, 0.1, 0.15])  # the recorded receive times
    assert seq.frames[1].dtype == np.uint8 and seq.frames[1].max() == 40 and seq.fps == pytest.approx(20)

    with pytest.raises(FileNotFoundError):
        media.read_sequence(tmp_path / "missing.mp4")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a folder of images"):
        media.read_sequence(tmp_path / "notes.txt")


def test_a_dicom_cine_reads_at_its_recorded_rate():
    from pydicom import examples

    seq = media.read_sequence(examples.get_path("ybr_color"))  # pydicom's 30-frame ultrasound cine at 30 frames/s
    assert len(seq) == 30 and seq.frames[0].dtype == np.uint8 and seq.frames[0].ndim == 2
    assert seq.times[1] == pytest.approx(1 / 30, rel=1e-3) and seq.meta["dicom_photometric"] == "YBR_FULL_422"


def test_inputs_are_listed_once_by_folder_glob_or_file_without_temp_files(tmp_path):
    for rel in ("a/1.png", "a/b/2.jpg", "c.dcm", "skip.txt", "a/.3.png.usnst-tmp1.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / rel), np.zeros((4, 4), np.uint8)) if rel.endswith((".png", ".jpg")) else \
            (tmp_path / rel).write_bytes(b"x")
    base, paths = media.list_inputs(tmp_path)
    assert base == tmp_path and [p.relative_to(base).as_posix() for p in paths] == ["a/1.png", "a/b/2.jpg", "c.dcm"]
    base, paths = media.list_inputs(f"{tmp_path}/a/**/*.jpg")
    assert base == tmp_path / "a" and [p.name for p in paths] == ["2.jpg"]
    with pytest.raises(FileNotFoundError, match="no inputs"):
        media.list_inputs(f"{tmp_path}/*.gif")


def test_wire_frames_become_grayscale_uint8():
    assert media.gray_uint8(np.full((2, 2, 1), 51200, np.uint16)).max() == 200
    assert media.gray_uint8(np.full((2, 2), 0.5, np.float32)).max() == 128
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 90
    assert media.gray_uint8(rgb).max() == 30
    assert media.to_uint8(np.array([-0.1, 0.5, 1.2])).tolist() == [0, 128, 255]


def _recording(path, n=6, period_s=0.2, size=(24, 32)):
    with RecordingWriter(path) as writer:
        for i in range(n):
            pixels = np.full(size, 20 * i, np.uint8)
            writer.write(1_000_000_000 + int(i * period_s * 1e9), protocol.encode(protocol.Frame(i, 0, pixels)))
    return path


def test_a_timed_video_lasts_as_long_as_its_frames_did(tmp_path):
    import cv2

    writer = media.TimedVideoWriter(tmp_path / "v.avi", fps=10)
    for t, level in ((5.0, 0), (5.02, 250), (5.5, 100), (7.0, 200)):  # 2 s of irregular frames
        writer.add(t, np.full((16, 24), level, np.uint8))
    assert writer.close() == tmp_path / "v.avi"
    video = cv2.VideoCapture(str(tmp_path / "v.avi"))
    frames = []
    while True:
        ok, f = video.read()
        if not ok:
            break
        frames.append(int(f.mean()))
    assert len(frames) == 21  # 2 s at 10 fps, plus the last frame
    assert abs(frames[0] - 250) < 8  # 0 and 250 came within one period: the later one is shown
    assert abs(frames[5] - 100) < 8 and abs(frames[19] - 100) < 8 and abs(frames[20] - 200) < 8
    aborted = media.TimedVideoWriter(tmp_path / "w.avi", fps=10)
    aborted.add(0.0, np.zeros((8, 8), np.uint8))
    aborted.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.avi"]  # no partial file, no temp file


def test_export_writes_a_recording_at_its_timestamps(tmp_path):
    import csv
    import subprocess
    import sys

    import cv2

    rec = _recording(tmp_path / "run.usrec")  # 6 frames over 1 s
    run = lambda *a: subprocess.run([sys.executable, "-m", "usnst.cli", "export", str(rec), *a], capture_output=True,
                                    text=True, timeout=60)
    done = run("--out", str(tmp_path / "run.avi"), "--fps", "20")
    assert done.returncode == 0, done.stderr
    count = int(cv2.VideoCapture(str(tmp_path / "run.avi")).get(cv2.CAP_PROP_FRAME_COUNT))
    assert count == 21 and "(1.05 s)" in done.stdout  # 1 s at 20 fps + the last frame, not 6 frames
    done = run("--out", str(tmp_path / "frames"))
    assert done.returncode == 0, done.stderr
    rows = list(csv.reader(open(tmp_path / "frames" / "times.csv")))
    assert rows[0] == ["file", "t_s"] and len(rows) == 7 and float(rows[-1][1]) == pytest.approx(1.0)
    assert cv2.imread(str(tmp_path / "frames" / rows[3][0]), cv2.IMREAD_GRAYSCALE).max() == 40


def test_stylize_takes_a_recording(tmp_path, tiny_checkpoint):
    import csv

    from usnst.engines.registry import load_engine
    from usnst.offline.stylize import StylizeJob, run_stylize

    _recording(tmp_path / "in" / "run.usrec", n=3)
    report = run_stylize(load_engine(tiny_checkpoint), StylizeJob(str(tmp_path / "in"), str(tmp_path / "out"),
                                                                  progress=False))
    assert report.written == 1 and not report.failed
    assert sorted(p.name for p in (tmp_path / "out").glob("run_*.png")) == ["run_0000.png", "run_0001.png",
                                                                           "run_0002.png"]
    rows = list(csv.reader(open(tmp_path / "out" / "run.times.csv")))
    assert [float(r[1]) for r in rows[1:]] == pytest.approx([0, 0.2, 0.4])


def _export(*args, timeout=60):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "usnst.cli", "export", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def test_export_of_a_recording_whose_clock_jumps_ends_and_says_so(tmp_path):
    """A receive time far ahead (a flipped bit, a clock step) wrote without end (issue 25, item 4)."""
    rec = tmp_path / "jump.usrec"
    with RecordingWriter(rec) as writer:
        for i, t in enumerate((1e9, 1.2e9, 1e18, 1e18 + 2e8)):  # the third frame 31 years later
            writer.write(int(t), protocol.encode(protocol.Frame(i, 0, np.full((16, 16), 40 * i, np.uint8))))
    done = _export(rec, "--out", tmp_path / "jump.avi", "--fps", "10")
    assert done.returncode == 0, done.stderr
    count = int(cv2.VideoCapture(str(tmp_path / "jump.avi")).get(cv2.CAP_PROP_FRAME_COUNT))
    assert count == 2 + 50 + 2 + 1 and "1 pause(s) longer than 5 s" in done.stdout  # the pause held for 5 s
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jump.avi", "jump.usrec"]  # no temp file left


def test_export_of_a_damaged_recording_keeps_later_frames_and_exits_1(tmp_path):
    rec = _recording(tmp_path / "run.usrec", n=6)
    data = bytearray(rec.read_bytes())
    data[16 + (len(data) - 16) // 6 * 2 + 40] ^= 0x04  # a bit inside the third record
    rec.write_bytes(bytes(data))
    done = _export(rec, "--out", tmp_path / "frames")
    assert done.returncode == 1 and "frames lost" in done.stderr and "skipped" in done.stderr
    assert len(list((tmp_path / "frames").glob("frame_*.png"))) == 5


def test_export_keeps_every_frame_of_a_mixed_size_sequence_and_refuses_to_overwrite(tmp_path):
    rec = tmp_path / "mixed.usrec"
    with RecordingWriter(rec) as writer:
        for i in range(6):
            size = (24, 32) if i % 2 == 0 else (40, 40)
            writer.write(10**9 + i * 10**8, protocol.encode(protocol.Frame(i, 0, np.full(size, 30 + 30 * i, np.uint8))))
    out = tmp_path / "mixed.avi"
    done = _export(rec, "--out", out, "--fps", "10")
    assert done.returncode == 0, done.stderr
    video, levels = cv2.VideoCapture(str(out)), []
    while True:
        ok, f = video.read()
        if not ok:
            break
        levels.append(int(np.median(f)))
    assert len(levels) == 6 and [abs(v - (30 + 30 * i)) < 8 for i, v in enumerate(levels)] == [True] * 6
    assert "3 frame(s) of another size" in done.stdout
    before = out.read_bytes()
    again = _export(rec, "--out", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr and out.read_bytes() == before
    assert _export(rec, "--out", out, "--overwrite").returncode == 0


def test_12_bit_data_in_a_16_bit_png_and_transparency_read_as_they_look(tmp_path):
    """Issue 25, item 11: 12-bit data shifted down by 8 bits came out nearly black; transparent pixels came out as
    whatever colour they hid (white: bright)."""
    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (4, 1))  # 12-bit values in a 16-bit PNG
    cv2.imwrite(str(tmp_path / "r12.png"), ramp)
    gray = media.read_gray(tmp_path / "r12.png")
    assert gray.dtype == np.uint8 and gray.max() >= 250 and abs(int(gray[0, 128]) - 128) <= 2
    full = np.tile(np.arange(0, 65536, 256, dtype=np.uint16), (4, 1))  # a real 16-bit image keeps its scale
    cv2.imwrite(str(tmp_path / "r16.png"), full)
    assert abs(int(media.read_gray(tmp_path / "r16.png")[0, 128]) - 128) <= 1
    rgba = np.full((6, 6, 4), 255, np.uint8)
    rgba[3:, :, 3] = 0  # the lower half transparent (white underneath)
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    gray = media.read_gray(tmp_path / "a.png")
    assert (gray[:3] == 255).all() and (gray[3:] == 0).all()
    assert (media.read_color(tmp_path / "a.png")[3:] == 0).all()


def test_an_mp4_is_h264_which_browsers_play(tmp_path):
    """Issue 25, item 14: MP4s were MPEG-4 Part 2 (FourCC FMP4), which browsers refuse."""
    import av

    writer = media.TimedVideoWriter(tmp_path / "v.mp4", fps=10)
    for i in range(5):
        writer.add(i / 10, np.full((21, 33), 40 * i, np.uint8))  # odd sides: padded for yuv420p
    writer.close()
    with av.open(str(tmp_path / "v.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        frames = [f.to_ndarray(format="gray") for f in container.decode(stream)]
    assert len(frames) == 5 and abs(int(np.median(frames[3])) - 120) <= 3


def _metaimage(volume: np.ndarray, compressed: bool) -> bytes:
    frames, h, w = volume.shape
    payload = zlib.compress(volume.tobytes()) if compressed else volume.tobytes()
    header = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nCompressedData = {compressed}\n"
              f"DimSize = {w} {h} {frames}\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n")
    return header.encode() + payload


def test_itk_sequences_metaimage_and_nrrd_read_frame_by_frame_and_wrong_ones_are_refused(tmp_path, tiny_checkpoint):
    """How PLUS and 3D Slicer store ultrasound sequences (issue 28: a real scanner's recording comes as .mha)."""
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 256, (4, 6, 5), dtype=np.uint8)  # 4 frames of 6 rows × 5 columns
    for compressed in (True, False):
        (tmp_path / "seq.mha").write_bytes(_metaimage(volume, compressed))
        frames = media.read_itk_frames(tmp_path / "seq.mha")
        assert len(frames) == 4 and all(np.array_equal(f, v) for f, v in zip(frames, volume))
    nrrd = b"NRRD0004\ntype: unsigned char\ndimension: 3\nsizes: 5 6 4\nencoding: gzip\n\n"
    (tmp_path / "seq.nrrd").write_bytes(nrrd + gzip.compress(volume.tobytes()))
    timed = list(media.iter_sequence(tmp_path / "seq.nrrd"))
    assert [t for t, _, _ in timed] == [0, 1 / 30, 2 / 30, 3 / 30] and np.array_equal(timed[2][1], volume[2])
    from usnst.engines.registry import load_engine
    from usnst.offline.stylize import StylizeJob, run_stylize

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "seq.mha").write_bytes(_metaimage(np.repeat(np.repeat(volume, 6, 1), 6, 2), True))
    report = run_stylize(load_engine(tiny_checkpoint), StylizeJob(str(tmp_path / "in"), str(tmp_path / "out"),
                                                                  progress=False))
    assert report.written == 1 and not report.failed  # usnst stylize takes them: a frame PNG each
    assert sorted(p.name for p in (tmp_path / "out").glob("seq_*.png")) == [f"seq_000{i}.png" for i in range(4)]
    (tmp_path / "short.mha").write_bytes(_metaimage(volume, False)[:-7])
    with pytest.raises(ValueError, match="truncated"):
        media.read_itk_frames(tmp_path / "short.mha")
    (tmp_path / "wide.mha").write_bytes(_metaimage(volume, False).replace(b"MET_UCHAR", b"MET_USHORT"))
    with pytest.raises(ValueError, match="only 8-bit grey"):
        media.read_itk_frames(tmp_path / "wide.mha")
