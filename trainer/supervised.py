"""Supervised (pixel-loss) training of the transform net on paired LQ→HQ triptychs.

The short run behind the embedded L1 models. Training is procedural, top to bottom: read pairs → sample crops →
L1 step → validate → save; the shared pieces (config, crops, schedule, scoring) are in trainer.base.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from usnst.engines.checkpoint import save_checkpoint
from usnst.engines.transformer_net import NetConfig, TransformerNet
from usnst.offline.datasets import read_triptych_folder
from usnst.offline.losses import pixel_loss
from usnst.trainer.base import (
    RunConfig,
    command_line,
    cosine_schedule,
    held_out_by_folder,
    held_out_scores,
    optimise,
    random_crops,
    uint8_runner,
)

log = logging.getLogger(__name__)


@dataclass
class SupervisedConfig(RunConfig):
    width: int = 16
    n_residual: int = 5
    noise: bool = True


def evaluate(model: TransformerNet, pairs, seed: int = 0) -> dict:
    """Mean PSNR/SSIM of the model and of the identity (LQ itself) against HQ on whole held-out frames."""
    return held_out_scores(pairs, {"": uint8_runner(model, torch.Generator().manual_seed(seed))})


def train(cfg: SupervisedConfig) -> dict:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    val, train_pairs = held_out_by_folder(cfg.data, cfg.val_fraction,
                                          lambda f: [(s.lq, s.hq) for s in read_triptych_folder(f)])
    if min(min(p[0].shape) for p in val + train_pairs) < cfg.crop:
        raise ValueError(f"crop {cfg.crop} is larger than the smallest panel in {cfg.data}")
    log.info("training on %d pairs, validating on %d", len(train_pairs), len(val))

    model = TransformerNet(NetConfig(cfg.width, cfg.n_residual, cfg.noise))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = cosine_schedule(opt, cfg.steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.monotonic()
    losses = []
    bar = tqdm(range(cfg.steps), desc="train", unit="step", disable=None if cfg.progress else True)
    for _ in bar:
        model.train()
        x, y = random_crops(train_pairs, cfg.batch, cfg.crop, rng)
        losses.append(optimise(opt, pixel_loss(model(x, model.make_noise(x, gen)), y), sched))
        bar.set_postfix(l1=f"{np.mean(losses[-20:]):.4f}")
    seconds = time.monotonic() - t0
    scores = evaluate(model, val, cfg.seed) if val else {}
    meta = {
        "task": "lq2hq",
        "training": "supervised L1 on paired LQ/HQ crops",
        "training_data": f"{len(train_pairs)} triptychs from {cfg.data}",
        "config": asdict(cfg),
        "command": command_line(),
        "steps": cfg.steps,
        "final_l1": float(np.mean(losses[-20:])),
        "first_l1": float(np.mean(losses[:20])),
        "train_seconds": seconds,
        "validation": scores,
    }
    save_checkpoint(cfg.out, model, meta)
    log.info("saved %s: %s", cfg.out, scores)
    return meta
