"""The realism trainer's loss table (issue 26, item 1): every term declared once, each with a behaviour this test
derives from the table, and everything else — options, guards, descriptions, log columns — derived from it too."""
import re
from pathlib import Path

import pytest
import torch

from usnst.offline.losses import RandomFilterTexture
from usnst.offline.patchgan import PatchDiscriminator, PatchGANConfig
from usnst.offline.realism import tissue_mask
from usnst.trainer import terms
from usnst.trainer.terms import DISCRIMINATOR, TERMS, Batch
from usnst_io.media import to_float
from usnst_stream.phantom import PhantomRenderer

ROOT = Path(__file__).resolve().parents[1]


def _batch(fake: torch.Tensor) -> Batch:
    scene = PhantomRenderer(256, 256, seed=5).render(0.0)  # ten 16×16 blocks wholly in tissue
    x = torch.from_numpy(to_float(scene.lq))[None, None]
    y = torch.from_numpy(to_float(scene.hq))[None, None]
    tissue = torch.from_numpy(tissue_mask(scene.hq, scene.seg))[None, None]
    torch.manual_seed(0)
    disc = PatchDiscriminator(PatchGANConfig(conditional=True))
    return Batch(fake, x, y, tissue, lambda: disc(fake, x), RandomFilterTexture(), 2)


@pytest.mark.parametrize("term", TERMS, ids=[t.name for t in TERMS])
def test_every_term_judges_the_output_and_one_that_compares_is_zero_on_its_target(term):
    """Derived from the table: each term's loss moves with the output (a gradient reaches it), and a term that
    compares with the aligned target (all but the discriminator's) is zero when the output is that target and grows as it departs from it."""
    y = _batch(torch.zeros(1)).y
    noisy = (y + 0.08 * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    fake = noisy.clone().requires_grad_(True)
    loss = term.loss(_batch(fake))
    loss.backward()
    assert torch.isfinite(loss) and fake.grad is not None and fake.grad.abs().sum() > 0, term.name
    if DISCRIMINATOR not in term.needs:
        assert term.loss(_batch(y.clone())).item() == pytest.approx(0.0, abs=1e-6), term.name
        assert term.loss(_batch(noisy)).item() > 1e-6, term.name


def test_a_term_is_named_in_its_function_and_the_table_and_nowhere_else():
    """Adding a term touches the table and its function only: the realism trainer's loop, its command's options,
    guards, descriptions and log restate no term (the other trainers' own weights, e.g. perceptual --pixel-weight,
    are theirs)."""
    import inspect

    from usnst.commands import train as command

    sources = {"trainer/terms.py": (ROOT / "trainer/terms.py").read_text(),
               "offline/losses.py": (ROOT / "offline/losses.py").read_text(),
               "trainer/realism.py": (ROOT / "trainer/realism.py").read_text(),
               "trainer/base.py": (ROOT / "trainer/base.py").read_text(),
               "usnst/commands/train.py (realism)": "".join(inspect.getsource(f) for f in (
                   command.realism_flags, command.realism_config, command.run_realism))}
    for term in TERMS:
        key = re.compile(rf"[\"']{term.name}[\"']|\b{term.name}_(weight|loss)\b|--{term.name.replace('_', '-')}-weight")
        files = {name for name, text in sources.items() if key.search(text)}
        assert files <= {"trainer/terms.py", "offline/losses.py"}, (term.name, sorted(files))


def test_guards_descriptions_and_log_columns_come_from_the_table(tmp_path):
    with pytest.raises(ValueError, match="unknown loss terms"):
        terms.check_weights({"spectrum": 1.0})
    with pytest.raises(ValueError, match="--mse-weight must be 0 or more"):
        terms.check_weights({"mse": -1.0})
    weights = {"anatomy": 1.0, "adversarial": 0.1, "nakagami": 0.5}
    assert terms.describe(weights) == ("realism: 1 × low-passed L1 to HQ + 0.1 × conditional PatchGAN (LSGAN, spectral "
                                       "norm) + 0.5 × block Nakagami m; no pretrained weights")
    assert terms.needs(weights) == {terms.DISCRIMINATOR, terms.TISSUE}
    assert terms.settings_off(weights, {"correlation_lags", "steps"}) == ["correlation_lags"]
    from usnst.trainer.realism import TrainingLog

    log = TrainingLog(tmp_path / "log.csv", weights, append=False)
    log.write({"step": 1, "anatomy": 0.5})
    log.close()
    header = (tmp_path / "log.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["step", "d_loss", "anatomy", "adversarial", "nakagami"]


def test_the_log_is_written_as_training_goes(tmp_path):
    """A row per step on disk while the run goes on, not at its end."""
    import threading

    from usnst.trainer.realism import RealismConfig, train
    from usnst_stream.phantom import write_phantoms

    write_phantoms(tmp_path / "data", 3, 48, 48, seed=3)
    stop = threading.Event()
    rows_seen = []

    class Watch(threading.Thread):
        def run(self):
            log = tmp_path / "m.log.csv"
            while not stop.is_set():
                if log.exists() and len(log.read_text().splitlines()) > 3:
                    rows_seen.append(len(log.read_text().splitlines()))
                    stop.set()

    watch = Watch()
    watch.start()
    r = train(RealismConfig(data=str(tmp_path / "data"), out=str(tmp_path / "m.pt"), channels=8, blocks=1,
                            steps=100000, batch=2, crop=32, val_fraction=0.0, progress=False), stop)
    watch.join(timeout=10)
    assert rows_seen and r["interrupted"] and 3 <= r["steps"] < 100000
    assert len((tmp_path / "m.log.csv").read_text().splitlines()) == r["steps"] + 1
