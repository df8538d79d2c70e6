"""Batch stylization: structure kept, atomic and resumable, shards, failures reported, metrics."""
import json
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from usnst.engines.base import EngineOptions
from usnst.engines.registry import load_engine
from usnst.offline.stylize import StylizeJob, parse_shard, run_stylize
from usnst_io.media import list_inputs
from usnst_stream.phantom import write_phantoms


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "in"
    for sub, n in (("a", 3), ("b/c", 2)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / sub / f"img{i}.png"), np.random.default_rng(i).integers(0, 255, (20, 28), dtype=np.uint8))
    (root / "b" / "broken.png").write_bytes(b"not a png")
    (root / "notes.txt").write_text("ignored")
    return root


def test_folder_structure_is_kept_and_failures_reported(tmp_path, tree, tiny_checkpoint):
    engine = load_engine(tiny_checkpoint, options=EngineOptions(seed=0))
    report = run_stylize(engine, StylizeJob(str(tree), str(tmp_path / "out"), progress=False))
    outs = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert outs == ["a/img0.png", "a/img1.png", "a/img2.png", "b/c/img0.png", "b/c/img1.png"]
    assert report.written == 5 and len(report.failed) == 1 and report.failed[0][0].endswith("broken.png")
    assert cv2.imread(str(tmp_path / "out/a/img0.png"), cv2.IMREAD_GRAYSCALE).shape == (20, 28)
    summary = json.loads((tmp_path / "out" / "stylize.json").read_text())
    assert summary["failed"] == 1 and summary["written"] == 5


def test_resume_skips_finished_outputs(tmp_path, tree, tiny_checkpoint):
    engine = load_engine(tiny_checkpoint)
    job = StylizeJob(str(tree), str(tmp_path / "out"), progress=False)
    run_stylize(engine, job)
    kept = tmp_path / "out/a/img1.png"
    stamp = kept.stat().st_mtime_ns
    (tmp_path / "out/a/img0.png").unlink()
    again = run_stylize(engine, job)
    assert again.written == 1 and again.skipped == 4
    assert kept.stat().st_mtime_ns == stamp


def test_shards_split_the_set_without_overlap(tmp_path, tree, tiny_checkpoint):
    engine = load_engine(tiny_checkpoint)
    done = []
    for i in range(3):
        run_stylize(engine, StylizeJob(str(tree), str(tmp_path / f"s{i}"), shard=(i, 3), progress=False))
        done.append({p.relative_to(tmp_path / f"s{i}").as_posix() for p in (tmp_path / f"s{i}").rglob("*.png")})
    assert sum(len(d) for d in done) == 5 and len(set().union(*done)) == 5
    assert parse_shard("2/4") == (2, 4)
    with pytest.raises(ValueError):
        parse_shard("4/4")


def test_glob_inputs_keep_paths_relative_to_the_glob_base(tree):
    base, paths = list_inputs(str(tree) + "/**/img*.png")
    assert base == tree and len(paths) == 5


def test_triptych_layout_scores_against_hq(tmp_path, tiny_checkpoint):
    write_phantoms(tmp_path / "data", 2, 32, 40, seed=1)
    report = run_stylize(load_engine(tiny_checkpoint),
                         StylizeJob(str(tmp_path / "data"), str(tmp_path / "out"), layout="triptych", metrics=True,
                                    progress=False))
    assert len(report.metrics) == 2
    rows = (tmp_path / "out" / "metrics.csv").read_text().strip().splitlines()
    assert rows[0] == "input,ssim,psnr,identity_ssim,identity_psnr" and len(rows) == 3
    assert cv2.imread(str(tmp_path / "out/phantom_00001.png"), cv2.IMREAD_GRAYSCALE).shape == (32, 40)


def test_an_interrupted_run_leaves_only_whole_files_and_resumes(tmp_path, tiny_checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(60):
        cv2.imwrite(str(src / f"f{i:03d}.png"), np.random.default_rng(i).integers(0, 255, (96, 96), dtype=np.uint8))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "usnst.cli", "-q", "stylize", str(src), "--out", str(out), "--model", str(tiny_checkpoint)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    outputs = lambda: [p for p in out.glob("*.png") if not p.name.startswith(".")]  # a killed write may leave a temp
    while time.monotonic() < deadline and len(outputs()) < 5:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = outputs()
    assert 0 < len(partial) < 60
    for p in partial:  # every file present is a whole, readable image
        assert cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).shape == (96, 96)
    (out / ".f999.png.usnst-tmp999999999.png").write_bytes(b"half")  # as if a killed run left its temp file
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{len(partial)} already done" in done.stdout or "already done" in done.stdout
    assert len(list(out.glob("*.png"))) == 60 and not list(out.glob(".*.usnst-tmp*"))


def test_an_output_folder_belongs_to_one_model_and_noise(tmp_path, tree, tiny_checkpoint):
    from conftest import tiny_net

    from usnst.engines.checkpoint import save_checkpoint

    out = tmp_path / "out"
    job = StylizeJob(str(tree), str(out), progress=False)
    run_stylize(load_engine(tiny_checkpoint, options=EngineOptions(seed=0)), job)
    identity = json.loads((out / "usnst-model.json").read_text())
    assert len(identity["checkpoint_sha256"]) == 64 and identity["noise"] == "fixed" and identity["seed"] == 0
    other = save_checkpoint(tmp_path / "other.pt", tiny_net(seed=99), {"task": "lq2hq"})
    with pytest.raises(ValueError, match="another model's outputs.*checkpoint_sha256"):
        run_stylize(load_engine(other), job)
    with pytest.raises(ValueError, match="seed 0 here vs 1 now"):
        run_stylize(load_engine(tiny_checkpoint, options=EngineOptions(seed=1)), job)
    again = run_stylize(load_engine(tiny_checkpoint, options=EngineOptions(seed=0)), job)  # same model: resumes
    assert again.skipped == 5 and again.written == 0
    replaced = run_stylize(load_engine(other), StylizeJob(str(tree), str(out), overwrite=True, progress=False))
    assert replaced.written == 5 and json.loads((out / "usnst-model.json").read_text())["checkpoint_sha256"] != \
        identity["checkpoint_sha256"]
    unclaimed = tmp_path / "unclaimed"
    unclaimed.mkdir()
    cv2.imwrite(str(unclaimed / "x.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="no usnst stylize run has claimed"):
        run_stylize(load_engine(tiny_checkpoint), StylizeJob(str(tree), str(unclaimed), progress=False))


def test_ctrl_c_ends_stylize_with_one_line_and_no_traceback(tmp_path, tiny_checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    frame = np.random.default_rng(0).integers(0, 255, (192, 192), dtype=np.uint8)
    for i in range(400):  # enough work that the run is still going when the signal comes, even on a busy machine
        cv2.imwrite(str(src / f"f{i:03d}.png"), frame)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "usnst.cli", "-q", "stylize", str(src), "--out", str(out), "--model", str(tiny_checkpoint)]
    # As from a terminal: a shell starts background jobs with SIGINT ignored, and Python keeps it so (CI may run so).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob("f*.png")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert "usnst stylize: interrupted." in err and "run the same command again to resume" in err


def test_a_seg2hq_model_reads_the_label_panel_of_a_triptych(tmp_path):
    from usnst.engines.checkpoint import default_model_path, load_checkpoint

    write_phantoms(tmp_path / "data", 1, 48, 48, seed=2)
    engine = load_engine("seg2hq", options=EngineOptions(noise="off"))
    run_stylize(engine, StylizeJob(str(tmp_path / "data"), str(tmp_path / "out"), layout="triptych", progress=False))
    from usnst.offline.datasets import read_triptych_folder

    t = read_triptych_folder(tmp_path / "data")[0]
    expected = (engine.infer(t.seg.astype(np.float32) / 255) * 255).round().clip(0, 255).astype(np.uint8)
    written = cv2.imread(str(next((tmp_path / "out").glob("*.png"))), cv2.IMREAD_GRAYSCALE)
    assert np.abs(written.astype(int) - expected).max() <= 1
    assert load_checkpoint(default_model_path("seg2hq"))[1]["task"] == "seg2hq"


def test_stylize_json_summary_on_stdout(tmp_path, tree, tiny_checkpoint):
    proc = subprocess.run([sys.executable, "-m", "usnst.cli", "-q", "stylize", str(tree), "--out", str(tmp_path / "o"),
                           "--model", str(tiny_checkpoint), "--json"], capture_output=True, text=True, timeout=120)
    summary = json.loads(proc.stdout)  # stdout is the JSON alone; the human lines went to stderr
    assert summary["written"] == 5 and summary["failed"] == 1 and "usnst stylize:" in proc.stderr
    assert proc.returncode == 1  # one input failed


def test_outputs_do_not_depend_on_order_shards_or_resume(tmp_path):
    """Property (issue 25, item 2): a stage that keeps state between frames (the fitted fan, noise drawn per frame)
    must start afresh for every file. Frames of several probe geometries, a real scanner DICOM and per-frame noise
    (the hardest case): one ordered run, a run over the same files under other names (another order), three
    shards into one folder and an interrupted-then-resumed run give byte-identical outputs."""
    import shutil

    from conftest import tiny_net
    from pydicom import examples

    from usnst.engines.beam_speckle import META_KEY, BeamSpeckleConfig
    from usnst.engines.checkpoint import save_checkpoint
    from usnst_stream.phantom import PhantomRenderer, acquisition

    model = save_checkpoint(tmp_path / "speckled.pt", tiny_net(), {"task": "lq2hq", META_KEY: BeamSpeckleConfig(
        rays=64, samples=96).to_dict()})
    src = tmp_path / "in"
    src.mkdir()
    for k in range(5):  # each scene its own sector (depth, angle): a fan kept from the previous file would differ
        renderer = PhantomRenderer(96, 112, seed=k, **acquisition("varied", np.random.default_rng([k, 7])))
        cv2.imwrite(str(src / f"f{k}.png"), to_png(renderer.render(0.0).lq))
    shutil.copy(examples.get_path("rgb_color"), src / "scan.dcm")
    names = sorted(p.name for p in src.iterdir())
    renamed = tmp_path / "renamed"  # the same files listed in reverse order
    renamed.mkdir()
    for i, name in enumerate(names):
        shutil.copy(src / name, renamed / f"{len(names) - i:02d}_{name}")

    def run(inputs, out, **kw):
        engine = load_engine(model, "torch", EngineOptions(noise="frame", seed=3, threads=1))
        return run_stylize(engine, StylizeJob(str(inputs), str(out), progress=False, **kw))

    def outputs(folder, strip=False):
        return {(p.name.split("_", 1)[1] if strip else p.name): p.read_bytes() for p in folder.glob("*.png")}

    run(src, tmp_path / "ordered")
    reference = outputs(tmp_path / "ordered")
    assert len(reference) == len(names)
    run(renamed, tmp_path / "reversed")
    assert outputs(tmp_path / "reversed", strip=True) == reference
    for i in range(3):
        run(src, tmp_path / "sharded", shard=(i, 3))
    assert outputs(tmp_path / "sharded") == reference
    run(src, tmp_path / "resumed")
    for name in ("f0.png", "f3.png", "scan.png"):
        (tmp_path / "resumed" / name).unlink()
    assert run(src, tmp_path / "resumed").written == 3
    assert outputs(tmp_path / "resumed") == reference


def to_png(frame: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(frame * 255), 0, 255).astype(np.uint8)


def test_a_damaged_model_record_is_named_in_the_error(tmp_path, tree, tiny_checkpoint):
    out = tmp_path / "out"
    run_stylize(load_engine(tiny_checkpoint), StylizeJob(str(tree), str(out), progress=False))
    (out / "usnst-model.json").write_text("{not json")
    with pytest.raises(ValueError, match="usnst-model.json is damaged"):
        run_stylize(load_engine(tiny_checkpoint), StylizeJob(str(tree), str(out), progress=False))


def test_misleading_inputs_get_a_word_triptychs_and_scanner_dicom(tmp_path, tiny_checkpoint):
    """Issue 25, item 12: the default layout on triptychs, and a scanner's DICOM, are said once, not silently."""
    import shutil

    from pydicom import examples

    write_phantoms(tmp_path / "data", 2, 32, 40, seed=1)
    report = run_stylize(load_engine(tiny_checkpoint), StylizeJob(str(tmp_path / "data"), str(tmp_path / "out"),
                                                                  progress=False))
    notes = report.summary()["notes"]
    assert len(notes) == 1 and "--layout triptych" in notes[0]
    laid_out = run_stylize(load_engine(tiny_checkpoint), StylizeJob(str(tmp_path / "data"), str(tmp_path / "t"),
                                                                     layout="triptych", progress=False))
    assert laid_out.summary()["notes"] == []
    (tmp_path / "scans").mkdir()
    shutil.copy(examples.get_path("palette_color"), tmp_path / "scans" / "doppler.dcm")
    notes = run_stylize(load_engine(tiny_checkpoint), StylizeJob(str(tmp_path / "scans"), str(tmp_path / "s"),
                                                                 progress=False)).summary()["notes"]
    assert any("simulator frames" in n for n in notes) and any("colour becomes grey" in n for n in notes)


def test_unrelated_images_of_a_batch_get_independent_grain_and_a_file_always_its_own(tmp_path):
    """Stream noise (``fixed``) in a batch: each file's grain is drawn for its content, so two scenes' outputs do
    not share a texture (one grain for every file made their fine textures correlate 0.6–0.7), while a rerun and a
    renamed copy give the same pixels."""
    from usnst.offline.temporal import fine_texture
    from usnst_stream.phantom import PhantomRenderer

    (tmp_path / "in").mkdir()
    for seed in (1, 2):
        cv2.imwrite(str(tmp_path / "in" / f"scene{seed}.png"), (PhantomRenderer(128, 128, seed=seed).render(0.0).lq * 255)
                    .round().astype(np.uint8))
    cv2.imwrite(str(tmp_path / "in" / "copy_of_1.png"), cv2.imread(str(tmp_path / "in" / "scene1.png"), 0))
    engine = load_engine("lq2hq_fast", "torch", EngineOptions(noise="fixed", seed=0, threads=1))
    for out in ("a", "b"):
        run_stylize(engine, StylizeJob(inputs=str(tmp_path / "in"), out=str(tmp_path / out), progress=False))
    read = lambda out, name: cv2.imread(str(tmp_path / out / name), 0)
    assert np.array_equal(read("a", "scene1.png"), read("b", "scene1.png"))
    assert np.array_equal(read("a", "scene1.png"), read("a", "copy_of_1.png"))
    t1, t2 = (fine_texture(read("a", f"scene{s}.png")) for s in (1, 2))
    both = (read("a", "scene1.png") > 0) & (read("a", "scene2.png") > 0)
    assert abs(np.corrcoef(t1[both], t2[both])[0, 1]) < 0.2


def test_a_dicoms_own_ultrasound_region_sizes_the_grain(tmp_path):
    """A scanner writes its B-mode geometry as an ultrasound region in cm; `usnst stylize` hands it to the stage, so
    a shallow linear view's grain has its size in mm (as with a pose), not the size of the model's own views."""
    import pydicom
    from pydicom import examples
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from usnst_io.media import read_gray
    from usnst_stream.phantom import PhantomRenderer, probe

    renderer = PhantomRenderer(256, 256, seed=50002, geometry=probe("linear"))
    frame = to_png(renderer.render(0.0).lq)
    ds = pydicom.dcmread(examples.get_path("rgb_color"))
    ds.set_pixel_data(frame, photometric_interpretation="MONOCHROME2", bits_stored=8)
    for folder, delta_cm in (("told", renderer.pixel_mm / 10), ("untold", None)):
        (tmp_path / folder).mkdir()
        if delta_cm is not None:
            region = Dataset()
            region.RegionSpatialFormat, region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = 1, 3, 3
            region.PhysicalDeltaX = region.PhysicalDeltaY = delta_cm
            ds.SequenceOfUltrasoundRegions = Sequence([region])
        elif "SequenceOfUltrasoundRegions" in ds:
            del ds.SequenceOfUltrasoundRegions
        ds.save_as(tmp_path / folder / "scan.dcm", enforce_file_format=True)
        engine = load_engine("lq2hq_fast", "torch", EngineOptions(noise="frame", seed=3, threads=1))
        assert run_stylize(engine, StylizeJob(str(tmp_path / folder), str(tmp_path / f"{folder}_out"),
                                              progress=False)).written == 1
    from usnst.offline.realism import speckle_fwhm, tissue_mask

    sample = renderer.render(0.0)
    mask = tissue_mask(to_png(sample.hq), sample.seg)
    axial = lambda image: speckle_fwhm(image, mask)[0]
    told, untold = (axial(read_gray(tmp_path / f"{f}_out" / "scan.png")) for f in ("told", "untold"))
    target = axial(to_png(sample.hq))
    assert abs(told / target - 1) < 0.2 and untold < 0.8 * target  # each file its own noise (by content): sizes, not pixels


def test_a_spacing_for_inputs_without_their_own_sizes_the_grain_and_is_part_of_the_output_folders_identity(tmp_path):
    """`usnst stylize --spacing-mm`: PNG frames of one shallow linear preset get the grain a pose would give them; a
    folder written with one spacing is not resumed with another; a model whose grain has no size in mm refuses it;
    the flag takes ROW,COL or one number, each finite and above 0."""
    import argparse

    from usnst import flags
    from usnst.offline.realism import speckle_fwhm, tissue_mask
    from usnst_io.media import read_gray
    from usnst_stream.phantom import PhantomRenderer, probe

    renderer = PhantomRenderer(256, 256, seed=50002, geometry=probe("linear"))
    sample = renderer.render(0.0)
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "view.png"), to_png(sample.lq))
    engine = lambda model="lq2hq_fast": load_engine(model, "torch", EngineOptions(noise="frame", seed=3, threads=1))
    job = lambda out, spacing: StylizeJob(str(tmp_path / "in"), str(tmp_path / out), progress=False, spacing_mm=spacing)
    mm = renderer.pixel_mm
    assert run_stylize(engine(), job("told", (mm, mm))).written == 1
    assert run_stylize(engine(), job("untold", None)).written == 1
    mask = tissue_mask(to_png(sample.hq), sample.seg)
    axial = lambda image: speckle_fwhm(image, mask)[0]
    told, untold = (axial(read_gray(tmp_path / f / "view.png")) for f in ("told", "untold"))
    target = axial(to_png(sample.hq))
    assert abs(told / target - 1) < 0.2 and untold < 0.8 * target
    assert json.loads((tmp_path / "told" / "usnst-model.json").read_text())["spacing_mm"] == [mm, mm]
    with pytest.raises(ValueError, match="spacing_mm"):  # the same folder, another spacing: not mixed
        run_stylize(engine(), job("told", (2 * mm, 2 * mm)))
    with pytest.raises(ValueError, match="no size in mm"):
        run_stylize(engine("lq2real"), job("real", (mm, mm)))
    assert flags.spacing("0.2") == (0.2, 0.2) and flags.spacing("0.1, 0.3") == (0.1, 0.3)
    for bad in ("0", "-1", "nan", "0.1,0.2,0.3", "a"):
        with pytest.raises(argparse.ArgumentTypeError):
            flags.spacing(bad)
