"""Perceptual-loss trainer: learns, resumes exactly, serves, averages style as defined."""
import numpy as np
import pytest
import torch

from usnst.engines.checkpoint import load_checkpoint
from usnst.engines.registry import load_engine
from usnst.offline.losses import gram
from usnst.offline.nst import average_style_target, to_tensor
from usnst.offline.nst_config import STYLE_LAYERS
from usnst.offline.vgg import load_vgg19
from usnst.trainer.perceptual import TrainConfig, train
from usnst_stream.phantom import write_phantoms


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantoms")
    write_phantoms(folder, 5, 64, 64, seed=10)
    return folder


def _cfg(data, out, **kw):
    base = dict(data=str(data), out_dir=str(out), steps=8, batch=2, crop=64, lr=1e-3, width=4, n_residual=1,
                vgg_weights="random", val_every=4, ckpt_every=4, style_weight=1e3, val_fraction=0.2, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_a_tiny_run_decreases_the_loss_and_gives_a_servable_checkpoint(data, tmp_path):
    r = train(_cfg(data, tmp_path, steps=30, lr=3e-3))
    assert r["steps"] == 30 and r["last_loss"] < r["first_loss"]
    rows = (tmp_path / "log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,total,content,style") and len(rows) == 31
    assert "ssim" in r["validation"] and 0 < r["validation"]["ssim"] <= 1
    model, meta = load_checkpoint(tmp_path / "best.pt")
    assert meta["task"] == "lq2hq" and "random (seed 0)" in meta["training"] and meta["validation"]
    out = load_engine(tmp_path / "final.pt").infer(np.full((40, 52), 0.4, np.float32))
    assert out.shape == (40, 52)


def test_resume_continues_exactly_like_an_uninterrupted_run(data, tmp_path):
    train(_cfg(data, tmp_path / "straight", steps=8))
    train(_cfg(data, tmp_path / "split", steps=4))  # "crashes" after its step-4 checkpoint
    train(_cfg(data, tmp_path / "split", steps=8, resume=True))
    a, _ = load_checkpoint(tmp_path / "straight" / "final.pt")
    b, _ = load_checkpoint(tmp_path / "split" / "final.pt")
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name


def test_average_style_target_is_the_gram_of_the_mean_features(data):
    vgg = load_vgg19("random")
    imgs = [np.random.default_rng(i).integers(0, 255, (32, 32), dtype=np.uint8) for i in range(3)]
    target = average_style_target(vgg, imgs, STYLE_LAYERS, mode="features")
    with torch.no_grad():
        feats = [vgg(to_tensor(im), STYLE_LAYERS) for im in imgs]
    for layer in STYLE_LAYERS:
        mean = torch.stack([f[layer] for f in feats]).mean(0)
        assert torch.allclose(target.whole[layer], gram(mean), atol=1e-6)


@pytest.mark.parametrize("task", ["seg2hq", "hq2clinical"])
def test_other_tasks_train(data, tmp_path, task):
    style = None
    if task == "hq2clinical":
        import cv2

        style = tmp_path / "clinical"
        style.mkdir()
        for i in range(2):
            cv2.imwrite(str(style / f"c{i}.png"), np.random.default_rng(i).integers(0, 255, (64, 64), dtype=np.uint8))
    r = train(_cfg(data, tmp_path / task, task=task, style=str(style) if style else None, steps=4,
                   inception_weights="random", val_fraction=0.4))
    assert r["steps"] == 4
    assert ("fid" in r["validation"]) == (task == "hq2clinical")
    if task == "hq2clinical":
        assert np.isfinite(r["validation"]["fid"])
    assert (tmp_path / task / "best.pt").exists()


def test_data_parallel_training_through_torchrun(data, tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "usnst.cli", "-q", "train",
           "perceptual", "--data", str(data), "--out-dir", str(tmp_path / "ddp"), "--steps", "4", "--crop", "64", "--width", "4",
           "--n-residual", "1", "--vgg-weights", "random", "--val-every", "2", "--ckpt-every", "2", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("usnst train:") == 1  # rank 0 reports
    assert (tmp_path / "ddp" / "final.pt").exists()
    rows = (tmp_path / "ddp" / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 5


def test_training_ssim_equals_scikit_image_and_has_gradients():
    from skimage.metrics import structural_similarity

    from usnst.offline.ssim_torch import ssim

    rng = np.random.default_rng(0)
    a = rng.random((30, 41))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ta = torch.tensor(a, dtype=torch.float64)[None, None].requires_grad_(True)
    value = ssim(ta, torch.tensor(b, dtype=torch.float64)[None, None])
    assert value.item() == pytest.approx(structural_similarity(a, b, data_range=1.0), abs=1e-10)
    value.backward()
    assert torch.isfinite(ta.grad).all() and ta.grad.abs().sum() > 0


def test_pixel_and_ssim_terms_are_logged_when_enabled(data, tmp_path):
    train(_cfg(data, tmp_path, steps=2, pixel_weight=1.0, ssim_weight=1.0))
    header, first = (tmp_path / "log.csv").read_text().splitlines()[:2]
    row = dict(zip(header.split(","), first.split(",")))
    assert float(row["pixel"]) > 0 and float(row["ssim_term"]) > 0


def test_a_stop_request_saves_the_state_and_resume_continues_exactly(data, tmp_path):
    import threading

    class StopAfter(threading.Event):
        """Set once the trainer has asked ``n`` times: a signal arriving mid-run."""

        def __init__(self, n):
            super().__init__()
            self.n = n

        def is_set(self):
            self.n -= 1
            return self.n < 0

    train(_cfg(data, tmp_path / "straight", steps=8))
    r = train(_cfg(data, tmp_path / "split", steps=8), stop=StopAfter(5))
    assert r["interrupted"] and r["steps"] == 5 and not (tmp_path / "split" / "final.pt").exists()
    train(_cfg(data, tmp_path / "split", steps=8, resume=True))
    a, _ = load_checkpoint(tmp_path / "straight" / "final.pt")
    b, _ = load_checkpoint(tmp_path / "split" / "final.pt")
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(_cfg(data, tmp_path / "never", resume=True))
