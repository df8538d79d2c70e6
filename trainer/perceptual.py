"""Perceptual-loss training of the transform net (Johnson et al. 2016) with the thesis' settings.

Loss per step, with the VGG19 loss network (offline.vgg):
    content_weight · MSE(VGG(out), VGG(input)) at block5_conv2
  + style_weight · mean over block{1..5}_conv1 of ‖G(out) − G(style)‖²   (Gram / C·H·W)
  [+ pixel_weight · L1(out, HQ) for paired tasks — beyond the thesis, off by default]
The style target is one image or the feature-space average of a folder, computed once.

Reproducibility by construction: the sample and the injected noise of step s are drawn from generators seeded with
(seed, s, rank), so a run resumed from a checkpoint at step s continues exactly as the uninterrupted run would —
only the model, the optimiser and the step need saving. DDP (torchrun) gives each rank its own samples.

Training is procedural, top to bottom: data → targets → loop (step, log, validate, checkpoint) → best model.
The loss terms come from offline.losses, the task weights from offline.tasks, the shared run pieces from trainer.base.
"""
from __future__ import annotations

import csv
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from usnst.engines.checkpoint import save_checkpoint
from usnst.engines.transformer_net import NetConfig, TransformerNet
from usnst.offline.datasets import centre_crop, read_triptych_folder, resize_longest
from usnst.offline.losses import (
    StyleTarget,
    content_loss,
    pixel_loss,
    ssim_loss,
    style_loss,
)
from usnst.offline.metrics import mean_scores, score_pair
from usnst.offline.nst import average_style_target, to_tensor
from usnst.offline.nst_config import CONTENT_LAYER, STYLE_LAYERS
from usnst.offline.tasks import DEFAULT_TASK, task
from usnst.offline.vgg import load_vgg19
from usnst.trainer.base import (
    command_line,
    optimise,
    save_state,
    split_held_out,
    step_generators,
)
from usnst_io.media import read_stills, to_uint8

log = logging.getLogger(__name__)

STATE_FORMAT = "usnst-train-state"


@dataclass
class TrainConfig:
    data: str  # folder of LQ | HQ | seg triptychs
    out_dir: str = "runs/train"
    task: str = DEFAULT_TASK
    style: str | None = None  # image or folder; default: the training HQ panels (average style)
    steps: int = 1000
    batch: int = 1
    crop: int = 1000  # thesis: centre crop 1000×1000
    size: int | None = None  # then resize to this side (CPU runs); None keeps the crop
    lr: float = 1e-5
    content_weight: float | None = None  # None: the task's thesis weight (offline.tasks)
    style_weight: float | None = None
    pixel_weight: float = 0.0  # L1 to HQ (paired tasks only)
    ssim_weight: float = 0.0  # 1 − SSIM to HQ (paired tasks only)
    width: int = 32
    n_residual: int = 5
    noise: bool = True
    val_fraction: float = 0.1
    val_every: int = 100
    ckpt_every: int = 100
    vgg_weights: str | None = None
    inception_weights: str | None = None
    seed: int = 0
    threads: int | None = None  # CPU threads (None: the runtime's)
    device: str = "cpu"
    amp: bool = True  # bf16 autocast on CUDA only
    deterministic: bool = False
    resume: bool = False
    progress: bool = True

    def resolved_content_weight(self) -> float:
        return task(self.task).content_weight if self.content_weight is None else self.content_weight

    def resolved_style_weight(self) -> float:
        return task(self.task).style_weight if self.style_weight is None else self.style_weight


def _prepare(img: np.ndarray, cfg: TrainConfig, labels: bool = False) -> np.ndarray:
    img = centre_crop(img, cfg.crop)
    return resize_longest(img, cfg.size, labels=labels) if cfg.size else img


def load_pairs(cfg: TrainConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """(network input, HQ) per sample: LQ → HQ, or segmentation → HQ; HQ → clinical uses HQ as input."""
    if "," in cfg.data:
        raise ValueError("the perceptual trainer reads one --data folder (the realism, supervised and distill "
                         "trainers take several)")
    spec = task(cfg.task)
    return [(_prepare(getattr(t, spec.source), cfg, labels=spec.source == "seg"), _prepare(t.hq, cfg))
            for t in read_triptych_folder(cfg.data)]


def style_images(cfg: TrainConfig, train_pairs) -> list[np.ndarray]:
    if cfg.style is None:
        if not task(cfg.task).paired:
            raise ValueError("hq2clinical needs --style: a clinical image or folder")
        return [hq for _, hq in train_pairs]
    return [_prepare(img, cfg) for img in read_stills(cfg.style)]


def _batch(pairs, rng, batch: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    idx = rng.integers(0, len(pairs), batch)
    x = torch.cat([to_tensor(pairs[i][0]) for i in idx]).to(device)
    y = torch.cat([to_tensor(pairs[i][1]) for i in idx]).to(device)
    if rng.random() < 0.5:  # horizontal flip: sector images are left-right symmetric in distribution
        x, y = x.flip(-1), y.flip(-1)
    return x, y


def losses(net, vgg, x, y, noise, style: StyleTarget, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The weighted loss terms of one batch; ``net`` may be the model or its DDP wrapper."""
    out = net(x, noise)
    layers = [CONTENT_LAYER, *STYLE_LAYERS]
    f_out = vgg(out, layers)
    with torch.no_grad():
        f_in = vgg(x, [CONTENT_LAYER])
    paired = task(cfg.task).paired
    terms = {"content": cfg.resolved_content_weight() * content_loss(f_out[CONTENT_LAYER], f_in[CONTENT_LAYER]),
             "style": cfg.resolved_style_weight() * style_loss(f_out, style)}
    if cfg.pixel_weight and paired:
        terms["pixel"] = cfg.pixel_weight * pixel_loss(out, y)
    if cfg.ssim_weight and paired:
        terms["ssim"] = cfg.ssim_weight * ssim_loss(out, y)
    terms["total"] = sum(terms.values())
    return terms


def validate(model, pairs, cfg: TrainConfig, style_imgs, inception=None) -> dict:
    """Paired tasks: PSNR/SSIM against HQ (and the identity baseline). Unpaired: FID to the style set."""
    model.eval()
    outs = []
    with torch.inference_mode():
        for i, (x, _) in enumerate(pairs):
            t = to_tensor(x).to(cfg.device)
            gen = torch.Generator().manual_seed(cfg.seed + i)
            noise = [n.to(t.device) for n in model.make_noise(t.cpu(), gen)] if cfg.noise else None
            outs.append(to_uint8(model(t, noise).clamp(0, 1)[0, 0].float().cpu().numpy()))
    model.train()
    if not task(cfg.task).paired:
        from usnst.offline.metrics import fid, inception_features, patches

        pa, pb = [p for o in outs for p in patches(o)], [p for s in style_imgs for p in patches(s)]
        if min(len(pa), len(pb)) < 2:
            log.warning("validation FID needs at least 2 patches per side (got %d and %d): enlarge the split", len(pa), len(pb))
            return {"fid": float("nan")}
        return {"fid": fid(inception_features(inception, pa), inception_features(inception, pb))}
    return mean_scores([score_pair(o, hq, x) for o, (x, hq) in zip(outs, pairs)])


def _is_better(metrics: dict, best: float | None) -> tuple[bool, float]:
    score = -metrics["fid"] if "fid" in metrics else metrics["ssim"]
    if not np.isfinite(score):
        return best is None, score if best is None else best
    return (best is None or not np.isfinite(best) or score > best), score


def _save_state(path: Path, model, opt, step: int, best: float | None, cfg: TrainConfig) -> None:
    save_state(path, {"format": STATE_FORMAT, "step": step, "best": best, "config": asdict(cfg),
                      "model": model.state_dict(), "net_config": model.config.to_dict(), "optimizer": opt.state_dict()})


def _load_state(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a usnst training state")
    return state


class _Logger:
    """CSV always; TensorBoard event files too when the tensorboard package is installed."""

    def __init__(self, out_dir: Path, resume: bool):
        self.path = out_dir / "log.csv"
        self.fields = ["step", "total", "content", "style", "pixel", "ssim_term", "ssim", "psnr", "fid", "images_per_s"]
        new = not (resume and self.path.exists())
        self.file = open(self.path, "w" if new else "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.fields, extrasaction="ignore")
        if new:
            self.writer.writeheader()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        except Exception:  # tensorboard not installed: CSV only
            self.tb = None

    def log(self, step: int, values: dict) -> None:
        self.writer.writerow({"step": step, **values})
        self.file.flush()
        if self.tb:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def close(self):
        self.file.close()
        if self.tb:
            self.tb.close()


def train(cfg: TrainConfig, stop: threading.Event | None = None) -> dict:
    """Train as ``cfg`` says (torchrun: one process per rank). ``stop`` (SIGINT/SIGTERM in the CLI) ends a
    single-process run after the current step with its state saved for ``resume``."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if cfg.device.startswith("cuda") else "gloo")
        if cfg.device.startswith("cuda"):
            cfg.device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)

    val_pairs, train_pairs = split_held_out(load_pairs(cfg), cfg.val_fraction)
    vgg = load_vgg19(cfg.vgg_weights, seed=cfg.seed).to(device)
    style_imgs = style_images(cfg, train_pairs)
    # Feature-space average style (thesis), precomputed once; one image is its own average.
    style = average_style_target(vgg, style_imgs, STYLE_LAYERS, mode="features")
    inception = None
    if not task(cfg.task).paired and val_pairs:
        from usnst.offline.inception import load_inception

        inception = load_inception(cfg.inception_weights)

    model = TransformerNet(NetConfig(cfg.width, cfg.n_residual, cfg.noise)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, best = 0, None
    state_path = out_dir / "last_state.pt"
    if cfg.resume:
        if not state_path.exists():
            raise FileNotFoundError(f"nothing to resume: {state_path} does not exist")
        state = _load_state(state_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, best = state["step"], state["best"]
        log.info("resumed from %s at step %d", state_path, step)
    use_cuda = device.type == "cuda"
    if use_cuda:
        model = model.to(memory_format=torch.channels_last)
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None)
    logger = _Logger(out_dir, cfg.resume) if rank == 0 else None
    meta_base = {"task": cfg.task, "training": "perceptual loss (Johnson et al.) with VGG19 " + vgg.weights_source,
                 "training_data": f"{len(train_pairs)} triptychs from {cfg.data}", "config": asdict(cfg),
                 "command": command_line()}
    first_loss = last_loss = None
    t0, images = time.monotonic(), 0
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.task}", unit="step",
               disable=not cfg.progress or rank != 0)
    # A signal ends a single-process run after its current step (ranks of a data-parallel run would disagree on
    # when, and wait for each other for ever: they stop as torchrun stops them).
    stopping = lambda: stop is not None and world == 1 and stop.is_set()
    while step < cfg.steps and not stopping():
        rng, gen = step_generators(cfg.seed, step, rank)
        x, y = _batch(train_pairs, rng, cfg.batch, device)
        if use_cuda:
            x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
        noise = [n.to(device) for n in model.make_noise(x.cpu(), gen)] if cfg.noise else None
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_cuda and cfg.amp):
            terms = losses(net, vgg, x, y, noise, style, cfg)
        optimise(opt, terms["total"])
        step += 1
        images += cfg.batch * world
        values = {("ssim_term" if k == "ssim" else k): float(v.detach()) for k, v in terms.items()}
        first_loss = values["total"] if first_loss is None else first_loss
        last_loss = values["total"]
        bar.update(1)
        bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()})
        if rank != 0:
            continue
        values["images_per_s"] = images / (time.monotonic() - t0)
        if val_pairs and (step % cfg.val_every == 0 or step == cfg.steps):
            metrics = validate(model, val_pairs, cfg, style_imgs, inception)
            values.update(metrics)
            better, score = _is_better(metrics, best)
            if better:
                best = score
                save_checkpoint(out_dir / "best.pt", model, {**meta_base, "steps": step, "validation": metrics})
        logger.log(step, values)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            _save_state(state_path, model, opt, step, best, cfg)
    bar.close()
    result = {"steps": step, "first_loss": first_loss, "last_loss": last_loss,
              "images_per_s": images / max(time.monotonic() - t0, 1e-9), "out_dir": str(out_dir),
              "interrupted": step < cfg.steps, "state": str(state_path)}
    if result["interrupted"]:
        _save_state(state_path, model, opt, step, best, cfg)
        logger.close()
        return result
    if rank == 0:
        logger.close()
        final_meta = {**meta_base, "steps": step}
        if val_pairs:
            final_meta["validation"] = validate(model, val_pairs, cfg, style_imgs, inception)
            result["validation"] = final_meta["validation"]
        save_checkpoint(out_dir / "final.pt", model, final_meta)
        if not (out_dir / "best.pt").exists():
            save_checkpoint(out_dir / "best.pt", model, final_meta)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return result
