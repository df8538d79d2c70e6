"""Realism without ImageNet weights: each measure against a case with a known answer, each loss term by its
behaviour, the discriminator's state resuming bit for bit, and outputs that stay black where the input has no echo."""
import csv

import cv2
import numpy as np
import pytest
import torch

from usnst.engines.checkpoint import load_checkpoint
from usnst.engines.fast_net import FastNet, FastNetConfig
from usnst.engines.transformer_net import NetConfig, TransformerNet
from usnst.offline import realism
from usnst.offline.losses import (
    RandomFilterTexture,
    anatomy_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
)
from usnst.offline.metrics import nakagami
from usnst.offline.patchgan import PatchDiscriminator, PatchGANConfig
from usnst_io.media import to_uint8
from usnst_stream.phantom import PhantomRenderer, write_phantoms


def _field(h: int, w: int, box_axial: int, box_lateral: int, seed: int = 0) -> np.ndarray:
    """White noise through a box filter: its autocorrelation is a triangle whose FWHM is the box width."""
    f = cv2.blur(np.random.default_rng(seed).standard_normal((h, w)).astype(np.float32), (box_lateral, box_axial))
    return np.clip(128 + f / f.std() * 30, 0, 255).astype(np.uint8)


def test_speckle_fwhm_recovers_a_known_correlation_length():
    mask = np.zeros((256, 256), bool)
    mask[20:230, 30:220] = True
    axial, lateral = realism.speckle_fwhm(_field(256, 256, 3, 2), mask)
    # The local-mean removal (σ 4 px) that keeps anatomy out of the measure shortens it slightly (≈ 6–8 % here).
    assert axial == pytest.approx(3.0, rel=0.1) and lateral == pytest.approx(2.0, rel=0.1)
    wide = realism.speckle_fwhm(_field(256, 256, 5, 3, seed=1), mask)
    assert wide[0] > axial + 1 and wide[1] > lateral + 0.4


def test_c2st_is_chance_on_one_distribution_and_certain_on_two():
    fine = [_field(32, 32, 2, 2, seed=s) for s in range(160)]
    coarse = [_field(32, 32, 6, 6, seed=1000 + s) for s in range(80)]
    budget = realism.C2STBudget(steps=150, repeats=1)
    same = realism.c2st(fine[:80], fine[80:], budget)
    assert 0.3 <= same <= 0.7
    assert realism.c2st(fine[:80], coarse, budget) >= 0.9
    assert np.isnan(realism.c2st(fine[:5], coarse[:5]))  # too few patches to say anything


def test_a_classifier_that_learnt_nothing_is_trained_again_from_another_start():
    fine = [_field(32, 32, 2, 2, seed=s) for s in range(160)]
    coarse = [_field(32, 32, 6, 6, seed=1000 + s) for s in range(80)]

    def steps(a, b):
        ticks = []
        return realism.c2st(a, b, realism.C2STBudget(steps=100, repeats=1), tick=ticks.append), sum(ticks)

    score, spent = steps(fine[:80], coarse)
    assert score >= 0.9 and spent == 100  # learnt at the first start: one classifier, as every figure before
    blank = [np.zeros((32, 32), np.uint8)] * 80  # nothing to tell apart: every classifier answers one class
    score, spent = steps(blank, blank)
    assert spent == 100 * realism.FIT_ATTEMPTS and score == 0.5


def test_tissue_nakagami_uses_only_blocks_inside_the_mask():
    rng = np.random.default_rng(0)
    dr = 50.0
    envelope = np.sqrt(rng.gamma(shape=1.0, scale=1.0, size=(256, 256)))  # Rayleigh: m = 1
    img = np.clip(255 * 20 * np.log10(envelope / envelope.max() * 10 ** (dr / 20)) / dr, 0, 255)
    img[:, 128:] = 128  # a flat half: infinite m if counted
    mask = np.zeros(img.shape, bool)
    mask[:, :128] = True
    m = nakagami(img, dr, mask=mask)
    assert m["blocks"] == (256 // 16) * (128 // 16) and m["m"] == pytest.approx(1.0, rel=0.25)


def test_histogram_distance_and_lowpass_ssim_have_their_plain_meanings():
    a = _field(64, 64, 2, 2)
    everywhere = np.ones(a.shape, bool)
    assert realism.histogram_distance(a, everywhere, a.astype(np.int16) + 10, everywhere) == pytest.approx(10, abs=0.5)
    assert realism.lowpass_ssim(a, a) == pytest.approx(1.0)
    other_speckle = _field(64, 64, 2, 2, seed=5)
    assert realism.lowpass_ssim(a, other_speckle) > 0.5 > realism.lowpass_ssim(a, 255 - a)


def test_the_phantom_oracle_has_hq_anatomy_with_independent_speckle():
    a = PhantomRenderer(96, 96, seed=3).render(0.0)
    b = PhantomRenderer(96, 96, seed=3, speckle_seed=4).render(0.0)
    assert np.array_equal(a.seg, b.seg)
    hq_a, hq_b = to_uint8(a.hq), to_uint8(b.hq)
    assert not np.array_equal(hq_a, hq_b)
    assert realism.lowpass_ssim(hq_a, hq_b) > 0.9  # same anatomy
    assert np.array_equal(to_uint8(PhantomRenderer(96, 96, seed=3).render(0.0).hq), hq_a)  # default unchanged


def test_random_filter_texture_is_zero_on_itself_and_grows_with_speckle_size():
    texture = RandomFilterTexture()
    t = lambda img: torch.from_numpy(img.astype(np.float32) / 255)[None, None]
    fine, fine2, coarse = _field(96, 96, 2, 2, 0), _field(96, 96, 2, 2, 1), _field(96, 96, 5, 5, 2)
    assert texture(t(fine), t(fine)).item() == pytest.approx(0.0, abs=1e-7)
    assert texture(t(fine), t(coarse)).item() > 3 * texture(t(fine), t(fine2)).item()
    # per-tile normalisation: a tile with no texture in the target (black) is not counted
    black = fine.copy()
    black[:, :48] = 0
    assert np.isfinite(texture(t(fine), t(black)).item())


def test_anatomy_loss_ignores_speckle_but_not_structure():
    base = np.full((64, 64), 0.3, np.float32)
    base[16:48, 16:48] = 0.7
    speckled = (base + 0.1 * np.random.default_rng(0).standard_normal(base.shape)).astype(np.float32)
    moved = np.roll(base, 8, axis=1)
    t = lambda a: torch.from_numpy(a)[None, None]
    assert anatomy_loss(t(speckled), t(base)).item() < 0.25 * anatomy_loss(t(moved), t(base)).item()


def test_patchgan_scores_patches_and_lsgan_targets():
    disc = PatchDiscriminator(PatchGANConfig(conditional=True))
    x, y = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)
    scores = disc(y, x)
    assert scores.shape[:2] == (2, 1) and scores.shape[-1] > 1  # one score per patch
    ones, zeros = torch.ones(3), torch.zeros(3)
    assert lsgan_discriminator_loss(ones, zeros).item() == 0 and lsgan_generator_loss(ones).item() == 0
    assert lsgan_generator_loss(zeros).item() == pytest.approx(0.5)
    unconditional = PatchDiscriminator(PatchGANConfig(conditional=False))
    assert unconditional(y).shape == scores.shape


def test_the_discriminator_can_go_without_spectral_norm():
    from torch.nn.utils import parametrize

    plain = PatchDiscriminator(PatchGANConfig(conditional=False, spectral_norm=False))
    normed = PatchDiscriminator(PatchGANConfig(conditional=False))
    convs = lambda d: [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert not any(parametrize.is_parametrized(c) for c in convs(plain))
    assert all(parametrize.is_parametrized(c) for c in convs(normed))
    y = torch.rand(2, 1, 64, 64)
    assert plain(y).shape == normed(y).shape


@pytest.mark.parametrize("net", [FastNet(FastNetConfig(channels=8, blocks=1, noise=True, echo_mask=True)),
                                 TransformerNet(NetConfig(width=4, n_residual=1, echo_mask=True))])
def test_outputs_stay_black_where_the_input_has_no_echo(net):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.rand(1, 1, 40, 48) * 0.8 + 0.1
    x[..., :, 30:] = 0  # no echo on the right
    y = net(x, net.make_noise(x, torch.Generator().manual_seed(0)))
    assert y[..., :, 33:].abs().max() == 0  # beyond the 2-px reach: black
    assert y[..., :, :28].abs().max() > 0


def _straight_and_resumed(tmp_path, common: dict) -> tuple[dict, dict]:
    """The saved states of a 4-step realism run in one go (folder a) and of one stopped after 2 steps and resumed (b)."""
    from usnst.trainer.realism import RealismConfig, train

    train(RealismConfig(out=str(tmp_path / "a" / "m.pt"), steps=4, **common))
    train(RealismConfig(out=str(tmp_path / "b" / "m.pt"), steps=2, **common))
    with open(tmp_path / "b" / "m.log.csv", "a") as f:  # a killed run logs steps past its last saved state
        f.write("3" + "," * 5 + "\n")
    train(RealismConfig(out=str(tmp_path / "b" / "m.pt"), steps=4, resume=True, **common))
    load = lambda run: torch.load(tmp_path / run / "m.state.pt", weights_only=True)
    return load("a"), load("b")


def test_realism_training_resumes_bit_for_bit(tmp_path):
    from usnst.trainer.realism import RealismConfig, train

    write_phantoms(tmp_path / "data", 3, 48, 48, seed=7)
    common = dict(data=str(tmp_path / "data"), channels=8, blocks=1, batch=2, crop=32, val_fraction=0.0,
                  weights=weights(texture=1.0), progress=False)
    a, b = _straight_and_resumed(tmp_path, common)
    assert a["step"] == b["step"] == 4
    logs = [(tmp_path / run / "m.log.csv").read_text().splitlines() for run in "ab"]
    assert [line.split(",")[0] for line in logs[1]] == ["step", "1", "2", "3", "4"]  # each step once
    assert [line.split(",")[1:4] for line in logs[0]] == [line.split(",")[1:4] for line in logs[1]]
    for part in ("generator", "discriminator"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(RealismConfig(out=str(tmp_path / "c" / "m.pt"), steps=2, resume=True, **common))


def test_the_realism_report_tells_lq_from_hq_and_passes_the_oracle(tmp_path):
    seeds = range(40, 44)
    samples = [PhantomRenderer(256, 256, seed=s).render(0.0) for s in seeds]
    oracle = [to_uint8(PhantomRenderer(256, 256, seed=s, speckle_seed=s + 1).render(0.0).hq) for s in seeds]
    hq, lq, segs = [to_uint8(s.hq) for s in samples], [to_uint8(s.lq) for s in samples], [s.seg for s in samples]
    budget = realism.C2STBudget(steps=150, repeats=1)
    lq_report = realism.realism_report(lq, hq, segs, budget=realism.C2STBudget(steps=150, repeats=2),
                                       patches_per_image=60)
    oracle_report = realism.realism_report(oracle, hq, segs, budget=budget, patches_per_image=60)
    runs = lq_report["c2st_runs"]  # two classifiers: their mean and its standard error, (n−1) std / √n
    assert len(runs) == 2 and lq_report["c2st_se"] == pytest.approx(abs(runs[0] - runs[1]) / 2)
    assert np.isnan(oracle_report["c2st_se"])  # one classifier: no spread to report
    from usnst.offline.evaluate import format_table

    table = format_table({"rows": [], "summary": {"failures": [], "realism": lq_report}})
    assert f"C2ST {lq_report['c2st']:.3f} ± {lq_report['c2st_se']:.3f} over 2 classifiers" in table
    assert lq_report["output"]["fwhm_lateral_px"] > 1.5 * lq_report["target"]["fwhm_lateral_px"]
    assert oracle_report["output"]["nakagami_m"] == pytest.approx(oracle_report["target"]["nakagami_m"], rel=0.15)
    assert oracle_report["lowpass_ssim"] > lq_report["lowpass_ssim"]
    assert oracle_report["c2st"] < lq_report["c2st"]
    # the fluid: dark in HQ and in the oracle alike, lifted by LQ's noise floor
    fluid = lq_report["anechoic_grey"]
    assert fluid["target"] == oracle_report["anechoic_grey"]["target"] < 40
    assert abs(oracle_report["anechoic_grey"]["output"] - fluid["target"]) < 3 and fluid["output"] > fluid["target"] + 15
    assert f"grey in fluid and vessels {fluid['output']:.1f} (target {fluid['target']:.1f})" in table


def test_the_anechoic_grey_is_the_mean_inside_fluid_and_vessels_away_from_their_edges():
    from usnst.engines.acoustics import FLUID, TISSUE, VESSEL

    seg = np.full((64, 64), TISSUE, np.uint8)
    seg[8:30, 8:30], seg[40:60, 40:60] = FLUID, VESSEL
    image = np.full((64, 64), 150, np.uint8)
    image[8:30, 8:30], image[40:60, 40:60] = 20, 40
    image[8:10, 8:30] = 255  # a bright rim inside the fluid's edge: not its interior
    interior = (22 - 8) ** 2 + (20 - 8) ** 2  # each square less 4 px each side
    assert realism.anechoic_grey([image], [seg]) == pytest.approx((20 * (22 - 8) ** 2 + 40 * (20 - 8) ** 2) / interior)
    assert np.isnan(realism.anechoic_grey([image], [np.full((64, 64), TISSUE, np.uint8)]))


def test_optimisation_nst_runs_on_random_filters_without_pretrained_weights(tmp_path):
    from usnst.offline.nst import run_texture_nst
    from usnst.offline.nst_config import NSTConfig, NSTJob
    from usnst.offline.nst_job import run_job

    s = PhantomRenderer(64, 64, seed=9).render(0.0)
    lq, hq = to_uint8(s.lq), to_uint8(s.hq)
    result = run_texture_nst(lq, [hq], NSTConfig(iterations=40, lr=1.0))
    styles = [step[2] for step in result.losses]
    assert styles[-1] < 0.7 * styles[0]  # the texture moves towards the style's
    assert np.abs(result.image - lq / 255.0).max() > 0.02
    cv2.imwrite(str(tmp_path / "t.png"), np.concatenate([lq, hq, s.seg], axis=1))
    report = run_job(NSTJob(out=str(tmp_path / "o.png"), triptych=str(tmp_path / "t.png"),
                            nst=NSTConfig(iterations=3, lr=1.0, loss_network="random-filters")))
    assert report["loss_network"] == "random-filters" and report["vgg_weights"] is None
    assert (tmp_path / "o.png").exists() and "metrics_vs_hq" in report
    with pytest.raises(ValueError, match="plain variant"):
        run_job(NSTJob(out=str(tmp_path / "a.png"), triptych=str(tmp_path / "t.png"), variant="augmented",
                       nst=NSTConfig(iterations=1, loss_network="random-filters")))


def test_metrics_realism_report_from_the_command_line(tmp_path):
    import json
    import subprocess
    import sys

    write_phantoms(tmp_path / "data", 3, 160, 160, seed=21)
    out = tmp_path / "out"
    out.mkdir()
    for p in sorted((tmp_path / "data").glob("*.png")):
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(out / p.name), img[:, :160])  # the LQ panel as the "output"
    proc = subprocess.run([sys.executable, "-m", "usnst.cli", "metrics", str(out), "--targets", str(tmp_path / "data"),
                           "--layout", "triptych", "--realism", "--c2st-repeats", "2",
                           "--json", str(tmp_path / "m.json")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "realism: Nakagami m" in proc.stdout and "C2ST" in proc.stdout
    realism_summary = json.loads((tmp_path / "m.json").read_text())["summary"]["realism"]
    assert realism_summary["images"] == 3 and 0 <= realism_summary["lowpass_ssim"] <= 1
    assert len(realism_summary["c2st_runs"]) == 2 and realism_summary["c2st_budget"]["repeats"] == 2
    with pytest.raises(ValueError, match="at least one classifier"):
        realism.C2STBudget(repeats=0)


def test_train_realism_from_the_command_line(tmp_path):
    import subprocess
    import sys

    write_phantoms(tmp_path / "data", 3, 48, 48, seed=3)
    cmd = [sys.executable, "-m", "usnst.cli", "-q", "train", "realism", "--data", str(tmp_path / "data"),
           "--channels", "8", "--blocks", "1", "--crop", "32", "--batch", "2", "--steps", "2",
           "--loss", "anatomy=1,pixel=0.2,adversarial=0.1,texture=0.3"]
    done = subprocess.run(cmd + ["--out", str(tmp_path / "m.pt")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "realism fast, 2 steps" in done.stdout and (tmp_path / "m.pt").exists() and (tmp_path / "m.state.pt").exists()
    from usnst.engines.checkpoint import load_checkpoint

    net, meta = load_checkpoint(tmp_path / "m.pt")
    assert net.config.noise and net.config.echo_mask and "PatchGAN" in meta["training"]
    again = subprocess.run(cmd + ["--out", str(tmp_path / "other.pt"), "--resume"], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 2 and "nothing to resume" in again.stderr


def test_block_nakagami_equals_the_metric_and_its_loss_sees_only_speckle_shape():
    from usnst.offline.losses import block_nakagami, nakagami_loss

    rng = np.random.default_rng(0)
    rayleigh = np.sqrt(rng.exponential(size=(128, 128)))  # fully developed speckle: m = 1
    grey = np.clip(255 + 20 * np.log10(rayleigh / rayleigh.max()) * 255 / 50, 0, 255).astype(np.uint8)
    x = torch.from_numpy(grey / 255.0).float()[None, None]
    blocks = block_nakagami(x)
    assert float(blocks.flatten().quantile(0.5)) == pytest.approx(nakagami(grey, min_level=0)["m"], rel=1e-3)
    assert float(blocks.median()) == pytest.approx(1.0, abs=0.2)
    assert nakagami_loss(x, x).item() == 0
    brighter = (x + 10 / 255).clamp(max=1)  # a gain change scales the envelope: m is unchanged
    assert nakagami_loss(brighter, x).item() < 0.05
    spiky = x.clone()
    spiky.view(-1)[::97] = 1.0  # sparse bright scatterers: a heavy tail, m falls
    assert nakagami_loss(spiky, x).item() > 0.3


def test_correlation_loss_is_zero_on_itself_and_grows_with_grain_size():
    from usnst.offline.losses import correlation_loss

    fine = torch.from_numpy(_field(128, 128, 1, 1) / 255.0).float()[None, None]
    coarse = torch.from_numpy(_field(128, 128, 3, 3, seed=1) / 255.0).float()[None, None]
    other_fine = torch.from_numpy(_field(128, 128, 1, 1, seed=2) / 255.0).float()[None, None]
    tissue = torch.ones_like(fine)
    assert correlation_loss(fine, fine, tissue).item() == 0
    assert correlation_loss(coarse, fine, tissue).item() > 5 * correlation_loss(other_fine, fine, tissue).item()
    half = torch.zeros_like(fine)
    half[..., :48, :] = 1  # only where the mask is (beyond the σ-4 high-pass reach): a coarse lower half is unseen
    mixed = torch.cat([fine[..., :64, :], coarse[..., 64:, :]], dim=2)
    assert correlation_loss(mixed, fine, half).item() == 0


def test_longer_correlation_lags_see_a_tail_that_lags_one_and_two_miss():
    from usnst.offline.losses import correlation_loss

    n = np.random.default_rng(0).standard_normal((128, 131)).astype(np.float32)
    white = n[:, :128]
    echo = white + 0.8 * n[:, 3:]  # correlated with itself three pixels across only: r₃ ≈ 0.49, r₁ = r₂ = 0
    t = lambda a: torch.from_numpy(0.5 + 0.1 * a / a.std()).float()[None, None]
    tissue = torch.ones(1, 1, 128, 128)
    assert correlation_loss(t(echo), t(white), tissue, 2).item() < 0.03
    assert correlation_loss(t(echo), t(white), tissue, 4).item() > 0.05  # r₃ 0.47 against −0.02, one of 8 values


def test_brightness_loss_is_the_block_mean_offset_in_tissue_only():
    from usnst.offline.losses import brightness_loss

    img = torch.from_numpy(_field(64, 64, 2, 2) / 255.0).float()[None, None]
    tissue = torch.zeros_like(img)
    tissue[..., :32, :] = 1
    assert brightness_loss(img, img, tissue).item() == 0
    assert brightness_loss(img + 0.02, img, tissue).item() == pytest.approx(0.02, abs=1e-6)
    outside = img.clone()
    outside[..., 32:, :] += 0.2
    assert brightness_loss(outside, img, tissue).item() == 0  # changed only outside the tissue
    within = img.clone()
    within[..., :16, :16] = within[..., :16, :16].flip(-1).flip(-2)  # pixels moved inside one block: same mean
    assert brightness_loss(within, img, tissue).item() < 1e-7


def test_the_realism_trainer_refuses_an_unpaired_task_before_reading_data(tmp_path):
    """It learns from an HQ panel of the same scene; hq2clinical has none (its look is fitted by scanner-texture)."""
    from usnst.trainer.realism import RealismConfig, train

    with pytest.raises(ValueError, match="paired tasks only.*scanner-texture"):
        train(RealismConfig(data=str(tmp_path / "nothing here"), task="hq2clinical", weights=weights(anatomy=1)))


def test_local_histogram_loss_sees_speckle_shape_not_brightness():
    from usnst.offline.losses import local_histogram_loss

    rng = np.random.default_rng(3)
    rayleigh = np.sqrt(rng.exponential(size=(64, 64)))
    log_speckle = torch.from_numpy(np.clip(0.6 + 0.1 * np.log(rayleigh), 0, 1)).float()[None, None]  # skewed dark
    tissue = torch.ones_like(log_speckle)
    assert local_histogram_loss(log_speckle, log_speckle, tissue).item() == 0
    brighter = log_speckle + 0.1 * torch.linspace(0, 1, 64).view(1, 1, -1, 1).round()  # anatomy: blockwise offsets
    assert local_histogram_loss(brighter, log_speckle, tissue).item() < 1e-6
    mirrored = 1.2 - log_speckle  # same spread, skewed bright instead of dark
    assert local_histogram_loss(mirrored, log_speckle, tissue).item() > 0.01
    none = torch.zeros_like(tissue)
    assert local_histogram_loss(mirrored, log_speckle, none).item() == 0  # no tissue block: nothing compared


def test_sigterm_stops_training_after_a_step_with_its_state_saved_and_resume_continues(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    write_phantoms(tmp_path / "data", 3, 48, 48, seed=3)
    cmd = [sys.executable, "-m", "usnst.cli", "train", "realism", "--data", str(tmp_path / "data"),
           "--channels", "8", "--blocks", "1", "--crop", "32", "--batch", "2", "--steps", "100000", "--val-every",
           "100000", "--out", str(tmp_path / "m.pt")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "m.log.csv"  # streamed: its second row means the steps have begun (a loaded machine starts slowly)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.exists() and len(log.read_text().splitlines()) > 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err  # not finished: a recipe must not skip it
    assert "stopped by a signal after step" in out and "--resume" in out
    state = torch.load(tmp_path / "m.state.pt", weights_only=True)
    assert 0 < state["step"] < 100000
    resumed = subprocess.run(cmd[:-4] + ["--steps", str(state["step"] + 2), "--out", str(tmp_path / "m.pt"),
                                         "--resume"], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(tmp_path / "m.state.pt", weights_only=True)["step"] == state["step"] + 2


def test_init_starts_the_generator_from_a_checkpoint_of_the_same_architecture(tmp_path):
    from usnst.engines.checkpoint import load_checkpoint, save_checkpoint
    from usnst.trainer.realism import RealismConfig, train

    write_phantoms(tmp_path / "data", 3, 48, 48, seed=3)
    start = FastNet(FastNetConfig(8, 1, noise=True, echo_mask=True))
    with torch.no_grad():
        for p in start.parameters():
            p.add_(0.01)
    save_checkpoint(tmp_path / "start.pt", start, {"task": "lq2hq"})
    base = dict(data=str(tmp_path / "data"), channels=8, blocks=1, steps=0, crop=32, batch=2, progress=False)
    train(RealismConfig(out=str(tmp_path / "m.pt"), init=str(tmp_path / "start.pt"), **base))
    net, _ = load_checkpoint(tmp_path / "m.pt")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), start.state_dict().values()))
    with pytest.raises(ValueError, match="not the architecture"):
        train(RealismConfig(out=str(tmp_path / "n.pt"), init=str(tmp_path / "start.pt"), **{**base, "channels": 16}))


def test_init_from_a_johnson_net_without_a_learned_skip_starts_it_as_the_identity(tmp_path):
    """--skip-kernel on top of a net trained without one: the run continues from that net's output, not a new one."""
    from usnst.engines.checkpoint import save_checkpoint
    from usnst.trainer.realism import RealismConfig, train

    write_phantoms(tmp_path / "data", 3, 48, 48, seed=3)
    torch.manual_seed(0)
    start = TransformerNet(NetConfig(4, 1, noise=True, echo_mask=True, residual=True))
    save_checkpoint(tmp_path / "start.pt", start, {"task": "lq2hq"})
    train(RealismConfig(data=str(tmp_path / "data"), arch="johnson", width=4, n_residual=1, skip_kernel=3, steps=0,
                        crop=32, batch=2, progress=False, out=str(tmp_path / "m.pt"), init=str(tmp_path / "start.pt")))
    net, _ = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(1, 1, 32, 32) * 0.5 + 0.25
    noise = [torch.zeros(s) for s in net.noise_shapes(1, 32, 32)]
    with torch.no_grad():
        assert net.config.skip_kernel == 3 and torch.allclose(net.eval()(x, noise), start.eval()(x, noise), atol=1e-6)




def test_patch_views_leave_the_c2st_only_the_grain_or_only_the_spectrum():
    fine = [_field(32, 32, 2, 2, seed=s) for s in range(160)]
    dull = [0.4 * p.astype(np.float32) + 90 for p in fine[80:]]  # the same grain, darker and flatter
    coarse = [_field(32, 32, 6, 6, seed=1000 + s) for s in range(80)]
    rank = realism.rank_view
    assert np.array_equal(rank(fine[0]), rank(np.sqrt(fine[0].astype(np.float32))))  # any monotone map: same ranks
    shuffled = realism.phase_randomised_view(fine[0])
    power = lambda p: np.abs(np.fft.fft2(p - p.mean())) ** 2
    assert np.allclose(power(shuffled), power(fine[0].astype(np.float64)), rtol=1e-3, atol=1e-3)
    assert np.abs(shuffled - fine[0]).mean() > 5  # yet another image
    budget = realism.C2STBudget(steps=150, repeats=1)
    assert realism.c2st(fine[:80], dull, budget) >= 0.9  # raw grey levels give the brightness away
    assert 0.3 <= realism.c2st([rank(p) for p in fine[:80]], [rank(p) for p in dull], budget) <= 0.7
    assert realism.c2st([rank(p) for p in fine[:80]], [rank(p) for p in coarse], budget) >= 0.9  # grain still seen


def test_the_squared_error_term_fits_the_mean_of_an_independent_speckle_target(tmp_path):
    """--mse-weight on `usnst phantom --independent-hq` data: the loss falls as the net learns HQ's mean grey (its
    speckle cannot be predicted from LQ's)."""
    from usnst.trainer.realism import RealismConfig, train

    write_phantoms(tmp_path / "data", 4, 48, 48, seed=5, independent_hq=True)
    common = dict(data=str(tmp_path / "data"), channels=8, blocks=1, batch=4, crop=32, val_fraction=0.0, lr=1e-2,
                  weights=weights(mse=1.0), progress=False)
    train(RealismConfig(out=str(tmp_path / "m.pt"), steps=60, **common))
    rows = list(csv.DictReader(open(tmp_path / "m.log.csv")))
    assert float(np.mean([float(r["mse"]) for r in rows[-10:]])) < 0.5 * float(rows[0]["mse"])
    assert "squared error" in load_checkpoint(tmp_path / "m.pt")[1]["training"]


def weights(**given) -> dict[str, float]:
    """A realism run's loss: the terms given, every other term of the table off."""
    from usnst.trainer.terms import TERMS

    return {t.name: float(given.get(t.name, 0.0)) for t in TERMS}


def test_init_from_a_run_state_continues_it_as_a_new_stage(tmp_path):
    """The shipped chains continue one stage's run state under the next stage's losses and rates: the nets,
    optimisers and step carry over, the learning rates and the best score are the new stage's own."""
    from usnst.trainer.realism import RealismConfig, train

    write_phantoms(tmp_path / "data", 3, 48, 48, seed=7)
    common = dict(data=str(tmp_path / "data"), channels=8, blocks=1, batch=2, crop=32, val_fraction=0.0,
                  progress=False)
    train(RealismConfig(out=str(tmp_path / "a" / "m.pt"), steps=2, **common))
    first = torch.load(tmp_path / "a" / "m.state.pt", weights_only=True)
    train(RealismConfig(out=str(tmp_path / "b" / "m.pt"), steps=4, init=str(tmp_path / "a" / "m.state.pt"),
                        lr=3e-4, weights=weights(anatomy=1, adversarial=0.1, texture=0.3), **common))
    second = torch.load(tmp_path / "b" / "m.state.pt", weights_only=True)
    assert second["step"] == 4 and second["opt_g"]["param_groups"][0]["lr"] == pytest.approx(3e-4)
    assert any(not torch.equal(second["generator"][k], first["generator"][k]) for k in first["generator"])
    with pytest.raises(ValueError, match="give one of them"):
        train(RealismConfig(out=str(tmp_path / "c" / "m.pt"), steps=2, init=str(tmp_path / "a" / "m.state.pt"),
                            resume=True, **common))



def test_gradient_clipping_acts_only_above_its_norm_and_the_log_shows_the_norm(tmp_path):
    """A bound above every step's gradient changes nothing (bit for bit); one below them changes the run; the log
    records each step's gradient norm before clipping."""
    import csv

    from usnst.trainer.realism import RealismConfig, train

    write_phantoms(tmp_path / "data", 3, 48, 48, seed=7)
    common = dict(data=str(tmp_path / "data"), channels=8, blocks=1, batch=2, crop=32, val_fraction=0.0,
                  weights=weights(anatomy=1, texture=1.0), steps=3, progress=False)
    states = {}
    for name, bound in (("free", 0.0), ("loose", 1e6), ("tight", 1e-4)):
        train(RealismConfig(out=str(tmp_path / name / "m.pt"), max_grad_norm=bound, **common))
        states[name] = torch.load(tmp_path / name / "m.state.pt", weights_only=True)["generator"]
    norms = [float(r["grad_norm"]) for r in csv.DictReader(open(tmp_path / "free" / "m.log.csv"))]
    assert len(norms) == 3 and min(norms) > 1e-4
    assert all(torch.equal(states["free"][k], states["loose"][k]) for k in states["free"])
    assert any(not torch.equal(states["free"][k], states["tight"][k]) for k in states["free"])


def test_several_data_folders_train_together_and_each_is_validated(tmp_path):
    """A comma-separated --data (phantoms of two image formations) trains on both; every folder gives validation
    frames, interleaved so that the first few already hold each."""
    from usnst.offline.datasets import read_triptych_folder
    from usnst.trainer.base import held_out_by_folder
    from usnst.trainer.realism import RealismConfig, train

    write_phantoms(tmp_path / "a", 4, 48, 48, seed=7)
    write_phantoms(tmp_path / "b", 4, 48, 48, seed=70, formation="rf", anatomy="abdominal")
    data = f"{tmp_path / 'a'},{tmp_path / 'b'}"
    val, training = held_out_by_folder(data, 0.5, read_triptych_folder)
    assert [v.name[:14] for v in val] == ["phantom_00007.", "phantom_00070.", "phantom_00008.", "phantom_00071."]
    assert len(training) == 4
    r = train(RealismConfig(data=data, out=str(tmp_path / "m.pt"), channels=8, blocks=1, batch=2, crop=32,
                            val_fraction=0.5, val_images=2, val_every=2, val_c2st_steps=5, steps=2,
                            weights=weights(mse=1.0), progress=False))
    assert r["steps"] == 2 and "triptychs from" in str(torch.load(tmp_path / "m.pt", weights_only=False))
    with pytest.raises(ValueError, match="no triptychs"):
        held_out_by_folder(f"{tmp_path / 'a'},{tmp_path / 'empty'}", 0.5, lambda f: [])


def test_metrics_report_invented_structure_against_the_inputs(tmp_path):
    """With --input the realism report says how much of the sector the outputs invent: nothing for outputs equal to
    their inputs (up to a monotone grey map), a blob as wide as one painted into a uniform region."""
    from usnst.offline.evaluate import MetricsJob, evaluate

    write_phantoms(tmp_path / "data", 2, 128, 128, seed=31)
    inputs, same, blob = (tmp_path / n for n in ("inputs", "same", "blob"))
    for folder in (inputs, same, blob):
        folder.mkdir()
    for p in sorted((tmp_path / "data").glob("*.png")):
        lq = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)[:, :128]
        cv2.imwrite(str(inputs / p.name), lq)
        cv2.imwrite(str(same / p.name), np.clip(lq.astype(int) * 0.8 + 20, 0, 255).astype(np.uint8))  # monotone map
        painted = lq.copy()
        cv2.circle(painted, (64, 90), 12, 0, -1)  # a dark disc 25 px wide
        cv2.imwrite(str(blob / p.name), painted)
    report = lambda outputs: evaluate(MetricsJob(str(outputs), str(tmp_path / "data"), "triptych", with_realism=True,
                                                 c2st_repeats=1, inputs=str(inputs), progress=False)
                                      )["summary"]["realism"]
    clean, invented = report(same), report(blob)
    assert clean["invented_share"] == 0 and clean["invented_blob_px"] == 0
    assert invented["invented_share"] > 0.01 and 15 <= invented["invented_blob_px"] <= 27


def test_the_texture_view_hides_the_content_and_keeps_the_grain():
    """Patches of one grain laid over different slow content (a brightness step and a smooth swell, as anatomy
    differs between a phantom and a scanner) are told apart as they are, not under the texture view; a coarser
    grain still is."""
    # slow: the σ-4 local mean removes it. A 30-grey swell is not hidden: the local mean at the patch's edge leaves up
    # to 9 grey of it, which a classifier that learns finds (0.65–0.79; before stop 35 a dead classifier read 0.5)
    swell = 40 + 15 * np.sin(np.arange(32) / 32 * np.pi)[:, None]
    fine = [_field(32, 32, 2, 2, seed=s).astype(np.float32) for s in range(160)]
    other = [np.clip(p + swell, 0, 255) for p in fine[80:]]
    coarse = [_field(32, 32, 6, 6, seed=1000 + s) for s in range(80)]
    view = realism.texture_view
    budget = realism.C2STBudget(steps=150, repeats=1)
    assert realism.c2st(fine[:80], other, budget) >= 0.9
    assert 0.3 <= realism.c2st([view(p) for p in fine[:80]], [view(p) for p in other], budget) <= 0.7
    assert realism.c2st([view(p) for p in fine[:80]], [view(p) for p in coarse], budget) >= 0.9



def test_an_unpaired_target_set_as_large_as_the_outputs_is_not_taken_for_their_pairs():
    """Target k is output k's only when the report is told so: real frames of other scenes (research/real_table.py)
    as many as the outputs are measured as a set, not paired by count."""
    outputs = [_field(64, 64, 2, 2, seed=s) for s in range(6)]
    targets = [_field(80, 80, 4, 4, seed=50 + s) for s in range(6)]
    with pytest.raises(ValueError, match="one to one"):
        realism.realism_report(outputs, targets[:5], paired=True)
    r = realism.realism_report(outputs, targets, budget=realism.C2STBudget(steps=50, repeats=1), paired=False)
    assert r["target"]["fwhm_axial_px"] > r["output"]["fwhm_axial_px"] and 0.0 <= r["c2st"] <= 1.0
