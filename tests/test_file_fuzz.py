"""Files damaged the ways disks, downloads and hand edits damage them — truncated at many points, bits flipped — are
read or refused with one clear error, never an unexpected exception (issue 25's fuzz bar). Every reader a command
uses on a user's file is exercised; the counts are printed (pytest -s)."""
import shutil

import cv2
import numpy as np
import pytest
from conftest import tiny_net

from usnst.engines.base import BackendUnavailable, EngineMismatch
from usnst.engines.checkpoint import CheckpointError, save_checkpoint
from usnst.engines.onnx_backend import export_onnx
from usnst.engines.registry import load_engine
from usnst_io import protocol
from usnst_io.dicom import read_dicom
from usnst_io.media import read_color, read_gray, read_sequence
from usnst_io.recording import RecordingError, RecordingWriter

# What a reader may raise for a bad file: each carries one sentence for the user (the CLI prints it as one line).
CLEAR = (ValueError, OSError, CheckpointError, EngineMismatch, BackendUnavailable, RecordingError)


def _variants(data: bytes, seed: int, cuts: int = 8, flips: int = 12):
    """Truncations spread over the file, and copies with one to three random bytes flipped."""
    rng = np.random.default_rng(seed)
    for k in range(cuts):
        yield f"cut{k}", data[: int(len(data) * (k + 0.5) / cuts)]
    for k in range(flips):
        damaged = bytearray(data)
        for at in rng.integers(0, len(data), 1 + k % 3):
            damaged[at] ^= 1 << int(rng.integers(0, 8))
        yield f"flip{k}", bytes(damaged)


def _originals(tmp_path):
    from pydicom import examples

    img = np.random.default_rng(0).integers(0, 255, (40, 48), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    cv2.imwrite(str(tmp_path / "a.jpg"), img)
    shutil.copy(examples.get_path("ybr_color"), tmp_path / "a.dcm")
    with RecordingWriter(tmp_path / "a.usrec") as writer:
        for i in range(4):
            writer.write(10**9 + i * 10**8, protocol.encode(protocol.Frame(i, 0, img)))
    checkpoint = save_checkpoint(tmp_path / "a.pt", tiny_net(), {"task": "lq2hq"})
    export_onnx(checkpoint, tmp_path / "a.onnx")
    return {
        "a.png": lambda p: (read_gray(p), read_color(p)),
        "a.jpg": lambda p: read_gray(p),
        "a.dcm": lambda p: read_dicom(p),
        "a.usrec": lambda p: read_sequence(p),
        "a.pt": lambda p: load_engine(str(p), "torch").infer(np.zeros((16, 16), np.float32)),
        "a.onnx": lambda p: load_engine(str(p)).infer(np.zeros((16, 16), np.float32)),
    }


def test_damaged_files_of_every_kind_are_read_or_refused_clearly(tmp_path, capsys):
    readers = _originals(tmp_path)
    counts = {}
    for name, read in readers.items():
        data = (tmp_path / name).read_bytes()
        read_ok = refused = 0
        for label, variant in _variants(data, seed=len(name)):
            path = tmp_path / f"{label}-{name}"
            path.write_bytes(variant)
            try:
                read(path)
                read_ok += 1
            except CLEAR as exc:
                assert str(exc).strip() and "\n" not in str(exc).strip(), f"{path.name}: {exc!r}"
                refused += 1
            except Exception as exc:  # anything else would reach the user as a traceback
                pytest.fail(f"{path.name}: unexpected {exc.__class__.__name__}: {exc}")
        counts[name] = (read_ok, refused)
    with capsys.disabled():
        total = sum(a + b for a, b in counts.values())
        print(f"\n{total} damaged files: " + ", ".join(f"{n} {a} read / {b} refused" for n, (a, b) in counts.items()))
    assert total == 6 * 20 and all(b > 0 for _, b in counts.values())


def test_a_folder_of_damaged_images_is_stylized_around_them(tmp_path, tiny_checkpoint, capsys):
    """Through the command: every damaged input is listed as failed with its reason, the rest are written."""
    from usnst.cli import main

    src = tmp_path / "in"
    src.mkdir()
    img = np.random.default_rng(1).integers(0, 255, (32, 32), dtype=np.uint8)
    cv2.imwrite(str(src / "good.png"), img)
    data = (src / "good.png").read_bytes()
    for label, variant in _variants(data, seed=5, cuts=4, flips=4):
        (src / f"{label}.png").write_bytes(variant)
    rc = main(["-q", "stylize", str(src), "--out", str(tmp_path / "out"), "--model", str(tiny_checkpoint)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    written = len(list((tmp_path / "out").glob("*.png")))
    failed = captured.out.count("failed: ")
    assert written + failed == 9 and written >= 1 and rc == (1 if failed else 0)
