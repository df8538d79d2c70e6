"""Supervised (pixel-loss) training of the transform net on paired LQ→HQ triptychs.

This is the short run that produces the embedded default model; the perceptual-loss trainer of the
thesis (Johnson et al.) builds on the same data and checkpoint code. Training is procedural, top to
bottom: read pairs → sample crops → L1 step → validate → save.
"""
from __future__ import annotations

import logging
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from engines.checkpoint import save_checkpoint
from engines.transformer_net import NetConfig, TransformerNet
from offline.datasets import read_triptych_folder
from offline.metrics import psnr, ssim

log = logging.getLogger(__name__)


@dataclass
class SupervisedConfig:
    data: str  # folder of LQ | HQ | seg triptychs (``usnst phantom`` writes them)
    out: str = "model.pt"
    steps: int = 400
    batch: int = 8
    crop: int = 128
    lr: float = 2e-3
    width: int = 16
    n_residual: int = 5
    noise: bool = True
    val_fraction: float = 0.15
    seed: int = 0
    threads: int | None = None


def _crops(pairs: list[tuple[np.ndarray, np.ndarray]], batch: int, crop: int, rng: np.random.Generator):
    """A batch of random aligned crops (with random horizontal flips) as (N, 1, crop, crop) tensors in [0, 1]."""
    xs, ys = [], []
    for _ in range(batch):
        lq, hq = pairs[rng.integers(len(pairs))]
        h, w = lq.shape
        i, j = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
        a, b = lq[i:i + crop, j:j + crop], hq[i:i + crop, j:j + crop]
        if rng.random() < 0.5:
            a, b = a[:, ::-1], b[:, ::-1]
        xs.append(a)
        ys.append(b)
    to_t = lambda arrs: torch.from_numpy(np.stack(arrs)[:, None].astype(np.float32) / 255.0)
    return to_t(xs), to_t(ys)


def held_out_scores(pairs, ways: dict) -> dict:
    """Mean SSIM and PSNR against HQ on whole held-out frames for each named way of turning an LQ frame (uint8)
    into an output (uint8), keys ``{prefix}ssim`` / ``{prefix}psnr``; the identity (LQ itself) is always scored."""
    ways = {**ways, "identity_": lambda lq: lq}
    scores = {f"{prefix}{metric}": [] for prefix in ways for metric in ("psnr", "ssim")}
    with torch.inference_mode():
        for lq, hq in pairs:
            for prefix, way in ways.items():
                out = way(lq)
                scores[f"{prefix}psnr"].append(psnr(out, hq))
                scores[f"{prefix}ssim"].append(ssim(out, hq))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def as_uint8_net(net, generator: torch.Generator | None = None):
    """uint8 frame → uint8 frame through ``net`` (noise from ``generator`` when the net has noise layers)."""
    net.eval()

    def run(lq: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(lq.astype(np.float32) / 255.0)[None, None]
        y = net(x, net.make_noise(x, generator)).clamp(0, 1)[0, 0].numpy()
        return np.rint(y * 255).astype(np.uint8)
    return run


def evaluate(model: TransformerNet, pairs, seed: int = 0) -> dict:
    """Mean PSNR/SSIM of the model and of the identity (LQ itself) against HQ on whole held-out frames."""
    return held_out_scores(pairs, {"": as_uint8_net(model, torch.Generator().manual_seed(seed))})


def train(cfg: SupervisedConfig) -> dict:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    samples = read_triptych_folder(cfg.data)
    pairs = [(s.lq, s.hq) for s in samples]
    if min(min(p[0].shape) for p in pairs) < cfg.crop:
        raise ValueError(f"crop {cfg.crop} is larger than the smallest panel in {cfg.data}")
    n_val = max(1, int(round(len(pairs) * cfg.val_fraction))) if len(pairs) > 1 else 0
    val, train_pairs = pairs[:n_val], pairs[n_val:] or pairs
    log.info("training on %d pairs, validating on %d", len(train_pairs), len(val))

    model = TransformerNet(NetConfig(cfg.width, cfg.n_residual, cfg.noise))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    # Cosine decay: a short run still ends on a small learning rate.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.monotonic()
    losses = []
    bar = tqdm(range(cfg.steps), desc="train", unit="step", disable=None)
    for _ in bar:
        model.train()
        x, y = _crops(train_pairs, cfg.batch, cfg.crop, rng)
        loss = F.l1_loss(model(x, model.make_noise(x, gen)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(l1=f"{np.mean(losses[-20:]):.4f}")
    seconds = time.monotonic() - t0
    scores = evaluate(model, val, cfg.seed) if val else {}
    meta = {
        "task": "lq2hq",
        "training": "supervised L1 on paired LQ/HQ crops",
        "training_data": f"{len(train_pairs)} triptychs from {cfg.data}",
        "config": asdict(cfg),
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "steps": cfg.steps,
        "final_l1": float(np.mean(losses[-20:])),
        "first_l1": float(np.mean(losses[:20])),
        "train_seconds": seconds,
        "validation": scores,
    }
    save_checkpoint(cfg.out, model, meta)
    log.info("saved %s: %s", cfg.out, scores)
    return meta
