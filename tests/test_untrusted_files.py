"""Files from elsewhere are refused in one line before they can allocate what they announce (issue 25, item 8)."""
import math
import zlib

import numpy as np
import pytest
import torch
from conftest import tiny_net

from usnst.cli import main
from usnst.engines.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    save_checkpoint,
)
from usnst.engines.registry import load_engine


def _payload(**changes):
    net = tiny_net()
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": net.config.to_dict(),
               "state_dict": dict(net.state_dict()), "meta": {"task": "lq2hq"}}
    for key, value in changes.items():
        if value is KeyError:
            payload.pop(key)
        else:
            payload[key] = value
    return payload


def _malformed(tmp_path):
    """(name, path) of checkpoints a damaged disk, a truncated download or a hand edit would give."""
    good = save_checkpoint(tmp_path / "good.pt", tiny_net(), {"task": "lq2hq"})
    data = good.read_bytes()
    cases = {"garbage.pt": b"\x80\x04 not a checkpoint at all", "truncated.pt": data[: len(data) // 2],
             "empty.pt": b""}
    config = tiny_net().config.to_dict()
    objects = {
        "a_list.pt": [1, 2, 3],
        "no_marker.pt": {"config": config},
        "no_config.pt": _payload(config=KeyError),
        "config_list.pt": _payload(config=[1, 2]),
        "width_text.pt": _payload(config={**config, "width": "32"}),
        "width_huge.pt": _payload(config={**config, "width": 100000}),
        "channels_huge.pt": _payload(config={"arch": "fast", "channels": 100000, "blocks": 6}),
        "blocks_negative.pt": _payload(config={"arch": "fast", "channels": 8, "blocks": -3}),
        "psf_unknown.pt": _payload(config={"arch": "fast", "channels": 8, "speckle": True, "speckle_psf": "x"}),
        "weights_missing.pt": _payload(state_dict={}),
        "weights_shape.pt": _payload(state_dict={k: torch.zeros(3) for k in tiny_net().state_dict()}),
        "weights_not_tensors.pt": _payload(state_dict={"conv1.conv.weight": [1, 2]}),
        "meta_list.pt": _payload(meta=[1]),
        "speckle_terabytes.pt": _payload(meta={"beam_speckle": {"rays": 10**6, "samples": 10**6}}),
        "speckle_nan.pt": _payload(meta={"beam_speckle": {"contrast": math.nan}}),
        "speckle_text.pt": _payload(meta={"beam_speckle": {"rays": "many"}}),
        "speckle_list.pt": _payload(meta={"beam_speckle": [256, 640]}),
    }
    for name, obj in objects.items():
        torch.save(obj, tmp_path / name)
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
    return sorted(set(objects) | set(cases))


def test_every_malformed_checkpoint_is_one_line_never_a_traceback(tmp_path, capsys):
    names = _malformed(tmp_path)
    tracebacks = silent = 0
    for name in names:
        path = str(tmp_path / name)
        with pytest.raises(CheckpointError):
            load_engine(path, "torch")
        for argv in (["info", "--model", path], ["stylize", str(tmp_path), "--out", str(tmp_path / "o"), "--model", path]):
            rc = main(argv)
            err = capsys.readouterr().err
            tracebacks += "Traceback" in err
            silent += rc == 0
            assert rc == 2 and err.strip().count("\n") == 0 and path in err, (name, argv[0], err)
    assert (tracebacks, silent, len(names)) == (0, 0, 20)


def _png_header_only(path, width, height):
    """A valid PNG signature and IHDR announcing width × height, and a tiny (wrong) body: a decompression bomb's
    header is all a decoder needs to allocate."""
    import struct

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_an_image_announcing_more_pixels_than_the_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    from usnst_io.limits import TooLarge
    from usnst_io.media import read_color, read_gray

    bomb = _png_header_only(tmp_path / "bomb.png", 60000, 60000)  # 3.6 gigapixels
    for read in (read_gray, read_color):
        with pytest.raises(TooLarge, match="60000x60000.*USNST_MAX_IMAGE_PIXELS"):
            read(bomb)
    import cv2

    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((40, 50), np.uint8))
    assert read_gray(small).shape == (40, 50)
    monkeypatch.setenv("USNST_MAX_IMAGE_PIXELS", "1000")  # configurable: the same file is now over the limit
    with pytest.raises(TooLarge, match="2,000 pixels"):
        read_gray(small)


def test_a_dicom_announcing_a_huge_cine_is_refused_before_decoding(tmp_path, monkeypatch):
    import pydicom
    from pydicom import examples

    from usnst_io.dicom import read_dicom
    from usnst_io.limits import TooLarge

    ds = pydicom.dcmread(examples.get_path("ybr_color"))  # 30 frames of 240 × 320
    ds.save_as(tmp_path / "cine.dcm")
    monkeypatch.setenv("USNST_MAX_DECODED_BYTES", str(240 * 320 * 10))
    with pytest.raises(TooLarge, match="30 frames of 320x240"):
        read_dicom(tmp_path / "cine.dcm")
