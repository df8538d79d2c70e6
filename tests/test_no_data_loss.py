"""No command loses a file (issue 25, item 3): nothing existing is replaced without --overwrite, every output name
collision is resolved and reported, and no output lands outside --out."""
import os

import cv2
import numpy as np
import pytest

from usnst.cli import main
from usnst.engines.base import EngineOptions
from usnst.engines.registry import load_engine
from usnst.offline.stylize import StylizeJob, run_stylize


def _image(path, seed=0, size=(20, 28)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8))
    return path


def _stylize(inputs, out, model, **kw):
    return run_stylize(load_engine(model, "torch", EngineOptions(threads=1)),
                       StylizeJob(str(inputs), str(out), progress=False, **kw))


def test_record_refuses_an_existing_recording_and_leaves_it_whole(tmp_path, capsys):
    existing = tmp_path / "session.usrec"
    existing.write_bytes(b"USNSTREC precious bytes")
    rc = main(["record", "--in", ">tcp://127.0.0.1:5999", "--out", str(existing), "--duration", "0.1"])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    assert existing.read_bytes() == b"USNSTREC precious bytes"


def test_clean_into_its_own_input_folder_is_refused_and_the_originals_stay(tmp_path, capsys):
    shot = _image(tmp_path / "shots" / "a.png")
    before = shot.read_bytes()
    assert main(["clean", str(tmp_path / "shots"), "--out", str(tmp_path / "shots")]) == 2
    assert "replace the inputs" in capsys.readouterr().err and shot.read_bytes() == before
    (tmp_path / "cleaned").mkdir()
    (tmp_path / "cleaned" / "mine.txt").write_text("keep")
    assert main(["clean", str(tmp_path / "shots"), "--out", str(tmp_path / "cleaned")]) == 2
    assert "--overwrite" in capsys.readouterr().err and (tmp_path / "cleaned" / "mine.txt").read_text() == "keep"


def test_inputs_differing_only_in_suffix_get_one_output_each(tmp_path, tiny_checkpoint, caplog):
    _image(tmp_path / "in" / "same.png", seed=1)
    _image(tmp_path / "in" / "same.jpg", seed=2)
    _image(tmp_path / "in" / "other.png", seed=3)
    report = _stylize(tmp_path / "in", tmp_path / "out", tiny_checkpoint)
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert report.written == 3 and names == ["other.png", "same.jpg.png", "same.png.png"]
    assert "share the output name same" in caplog.text
    sharded = [_stylize(tmp_path / "in", tmp_path / "sharded", tiny_checkpoint, shard=(i, 2)) for i in range(2)]
    assert sum(r.written for r in sharded) == 3  # shards agree on the names
    assert sorted(p.name for p in (tmp_path / "sharded").glob("*.png")) == names


def test_a_user_file_with_tmp_in_its_name_is_an_input(tmp_path, tiny_checkpoint):
    _image(tmp_path / "in" / "scan.tmp.png")
    _image(tmp_path / "in" / "x.tmp2.png", seed=1)
    assert _stylize(tmp_path / "in", tmp_path / "out", tiny_checkpoint).written == 2


def test_an_output_folder_inside_the_input_folder_is_not_stylized_again(tmp_path, tiny_checkpoint):
    for i in range(2):
        _image(tmp_path / "in" / f"f{i}.png", seed=i)
    out = tmp_path / "in" / "styled"
    for _ in range(3):
        report = _stylize(tmp_path / "in", out, tiny_checkpoint)
        assert report.total == 2
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["f0.png", "f1.png"]


def test_a_glob_through_a_symlink_loop_lists_each_image_once(tmp_path, tiny_checkpoint):
    _image(tmp_path / "in" / "a" / "one.png")
    _image(tmp_path / "in" / "a" / "two.png", seed=1)
    os.symlink(tmp_path / "in", tmp_path / "in" / "a" / "loop")
    report = _stylize(str(tmp_path / "in") + "/**/*.png", tmp_path / "out", tiny_checkpoint)
    assert report.total == 2 and len(list((tmp_path / "out").rglob("*.png"))) == 2


def test_a_glob_with_dotdot_cannot_write_outside_out(tmp_path, tiny_checkpoint):
    _image(tmp_path / "in" / "sub" / "x.png")
    _image(tmp_path / "elsewhere" / "y.png", seed=1)
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    with pytest.raises(ValueError, match="outside"):
        _stylize(str(tmp_path / "in") + "/*/../../elsewhere/*.png", tmp_path / "out", tiny_checkpoint)
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == before


def test_an_empty_input_spec_is_refused_rather_than_the_current_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _image(tmp_path / "here.png")
    assert main(["stylize", "", "--out", str(tmp_path / "out")]) == 2
    assert "no inputs given" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_keys_cannot_be_written_outside_their_folder(tmp_path, capsys):
    assert main(["keys", "--out", str(tmp_path / "k"), "../escaped"]) == 2
    assert "plain file name" in capsys.readouterr().err
    assert not list(tmp_path.glob("escaped*"))
    assert main(["keys", "--out", str(tmp_path / "k"), "node"]) == 0
    assert (os.stat(tmp_path / "k" / "node.key_secret").st_mode & 0o777) == 0o600
