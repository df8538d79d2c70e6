"""The real-scanner data set (issue 28, item 1): archives checked by hash, frames decoded, near-copies dropped, UI
cleaned, split by scanner maker, every file accounted for. Tiny archives made here stand in for the registries'."""
import hashlib
import io
import json
import tarfile
import zipfile

import cv2
import numpy as np
import pytest

from usnst.offline.datasets import read_triptych_folder
from usnst.offline.real_scanners import (
    ARCHIVES,
    LEFT_OUT,
    PROBES,
    RECORDINGS,
    Archive,
    Recording,
    build,
    split_of,
    write_keep_triptychs,
)
from usnst_io import media


def _screen(seed: int) -> np.ndarray:
    """A linear probe's speckle rectangle (160 × 160) on a UI canvas with text beside it, as a scanner's screen."""
    rng = np.random.default_rng(seed)
    speckle = cv2.GaussianBlur(rng.rayleigh(1.0, (160, 160)).astype(np.float32), (0, 0), 1.0)
    canvas = np.zeros((200, 260, 3), np.uint8)
    canvas[20:180, 80:240] = np.clip(speckle * 70, 0, 255).astype(np.uint8)[:, :, None]
    cv2.putText(canvas, "GAIN 55", (4, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return canvas


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


@pytest.fixture
def registry(tmp_path):
    """A wheel and a source archive in a cache folder, with their hashes, and recordings of two makers."""
    cache = tmp_path / "cache"
    cache.mkdir()
    video = tmp_path / "cine.mp4"  # three copies of one view, then three of another: two distinct frames
    media.write_video([_screen(1)[:, :, 0]] * 3 + [_screen(2)[:, :, 0]] * 3, video, fps=10)
    with zipfile.ZipFile(cache / "fake-1.0-py3-none-any.whl", "w") as z:
        z.writestr("data/cine.mp4", video.read_bytes())
        z.writestr("data/still.png", _png(_screen(3)))
        z.writestr("data/broken.png", b"not an image")
    dual = np.concatenate([_screen(4), _screen(5)], axis=1)
    with tarfile.open(cache / "fake-2.0.tar.gz", "w:gz") as t:
        data = _png(dual)
        info = tarfile.TarInfo("fake-2.0/tests/data/dual.png")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))

    def digest(name):
        return hashlib.sha256((cache / name).read_bytes()).hexdigest()

    archives = {"wheel": Archive("fake", "1.0", "fake-1.0-py3-none-any.whl", digest("fake-1.0-py3-none-any.whl"),
                                 "MIT", "data/"),
                "sdist": Archive("fake", "2.0", "fake-2.0.tar.gz", digest("fake-2.0.tar.gz"), "Apache-2.0",
                                 "fake-2.0/tests/data/", sdist=True)}
    recordings = (Recording("a-cine", "wheel", ("cine.mp4", "still.png"), "Maker1", "M1", "linear", "phantom"),
                  Recording("a-bad", "wheel", ("broken.png", "absent.png"), "Maker1", "M1", "linear", "phantom"),
                  Recording("b-dual", "sdist", ("dual.png",), "Maker2", "M2", "curvilinear", "phantom", views=2))
    return dict(cache=cache, archives=archives, recordings=recordings, left_out={"wheel": {"x.dcm": "a copy"}},
                held_out=frozenset({"Maker2"}))


def test_the_set_is_split_by_maker_cleaned_deduplicated_and_every_file_accounted_for(tmp_path, registry):
    out = tmp_path / "set"
    m = build(out, say=lambda line: None, **registry)
    assert m["frames"] == {"train": 3, "held_out": 2}  # the cine's 2 distinct frames and the still; 2 views
    cine = sorted((out / "train" / "a-cine").glob("cine_*.png"))
    assert len(cine) == 2
    assert sorted(p.name for p in (out / "held_out" / "b-dual").iterdir()) == ["dual_0000.png", "dual_0001.png"]
    assert not (out / "train" / "b-dual").exists() and not (out / "held_out" / "a-cine").exists()
    for path in cine + sorted((out / "held_out" / "b-dual").iterdir()):
        image = media.read_gray(path)
        assert 155 <= image.shape[0] <= 162 and 155 <= image.shape[1] <= 162  # the image region, not the screen
    left = {row["file"]: row["reason"] for row in m["left_out"]}
    assert set(left) == {"x.dcm", "broken.png", "absent.png"} and "not in fake-1.0" in left["absent.png"]
    written = json.loads((out / "manifest.json").read_text())
    rows = {r["id"]: r for r in written["recordings"]}
    assert rows["a-cine"]["split"] == "train" and rows["b-dual"]["split"] == "held_out"
    assert rows["a-cine"]["files"][0]["distinct_frames"] == 2 and rows["a-cine"]["frames"] == 3
    assert {s["licence"] for s in written["sources"]} == {"MIT", "Apache-2.0"}
    with pytest.raises(ValueError, match="--overwrite"):
        build(out, say=lambda line: None, **registry)
    build(out, overwrite=True, height=80, say=lambda line: None, **registry)  # at the simulator's frame height
    assert {media.read_gray(p).shape[0] for p in out.rglob("*.png")} == {80}


def test_the_training_side_becomes_triptychs_that_ask_a_net_to_keep_each_frame(tmp_path, registry):
    out = tmp_path / "set"
    build(out, say=lambda line: None, **registry)
    keep = tmp_path / "keep"
    (keep / "old").mkdir(parents=True)  # an earlier run's leftovers do not stay
    assert write_keep_triptychs(out, keep, per_recording=2) == 2  # the cine's first and last kept frames
    triptychs = read_triptych_folder(keep)
    frames = sorted((out / "train" / "a-cine").glob("*.png"))
    assert len(triptychs) == 2 and not (keep / "old").exists()
    assert np.array_equal(triptychs[0].lq, media.read_gray(frames[0]))
    assert np.array_equal(triptychs[1].lq, media.read_gray(frames[-1]))  # evenly spread: the last one too
    for t in triptychs:
        assert t.name.startswith("a-cine_")  # the training side only: Maker2 is held out
        assert np.array_equal(t.lq, t.hq) and not t.seg.any()
    assert write_keep_triptychs(out, keep, min_side=200) == 0  # narrower than a training crop: left out


def test_an_archive_whose_hash_differs_is_refused_before_anything_is_written(tmp_path, registry):
    archive = registry["cache"] / "fake-2.0.tar.gz"
    archive.write_bytes(archive.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="SHA-256 .* not the pinned"):
        build(tmp_path / "set", say=lambda line: None, **registry)
    assert not (tmp_path / "set").exists()


def test_the_real_tables_keep_each_recording_and_maker_on_one_side_and_list_each_file_once():
    ids = [r.id for r in RECORDINGS]
    assert len(ids) == len(set(ids))
    files = [(r.archive, f) for r in RECORDINGS for f in r.files]
    files += [(a, f) for a, names in LEFT_OUT.items() for f in names]
    assert len(files) == len(set(files)), "a file is in two recordings, or both used and left out"
    assert all(r.archive in ARCHIVES and r.probe in PROBES for r in RECORDINGS)
    sides = {}
    for r in RECORDINGS:
        sides.setdefault(r.maker, set()).add(split_of(r))
    assert all(len(s) == 1 for s in sides.values()), "a maker on both sides"
    for side in ("train", "held_out"):
        makers = {m for m, s in sides.items() if side in s}
        subjects = " ".join(r.subject for r in RECORDINGS if split_of(r) == side)
        assert len(makers) >= 2 and "phantom" in subjects, side
    assert any("phantom" not in r.subject for r in RECORDINGS if split_of(r) == "held_out"), "no tissue held out"
