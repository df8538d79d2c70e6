"""Optimisation-based neural style transfer (Gatys et al. 2016) and the thesis' variants.

The output image itself is optimised with Adam to minimise
    content_weight · MSE(F_out, F_content) at block5_conv2
  + style_weight · mean over style layers of ‖G_out − G_style‖²  (Gram matrices normalised by feature size)
with no total-variation term (it would smooth away the speckle the style is made of).

Variants, all through ``run_nst``:
- plain: one Gram per layer over the whole image;
- augmented: one masked Gram per segmentation label common to content and style (the style's own masks when it has
  a segmentation, else the content's masks applied to both), averaged over labels;
- local: ``run_local_nst`` optimises each label region on its own and sums the regions;
- average style: the target Grams come from a folder of style images, by averaging features or averaging Grams.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from usnst.offline.losses import (
    StyleTarget,
    content_loss,
    gram,
    masked_gram,
    style_loss,
)
from usnst.offline.masks import label_masks, masks_for_layers, object_mask
from usnst.offline.nst_config import STYLE_LAYERS, NSTConfig
from usnst_io.media import to_float

log = logging.getLogger(__name__)

# The thesis optimised in 0–255 pixel units (Keras' VGG preprocessing), so its Adam lr 5e-3 is a step of
# 5e-3 grey levels; the image variable here is kept in those units for the same step size.
PIXEL_SCALE = 255.0
OBJECT = 256  # key of the whole-object mask among the per-label masks (labels are 0..255)


@dataclass
class NSTResult:
    image: np.ndarray  # float32 (H, W) in [0, 1]
    losses: list[tuple[float, float, float]]  # per iteration: total, content, style (weighted)


def _device(vgg) -> torch.device:
    return next(vgg.parameters()).device


def to_tensor(img: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 or float [0, 1] (H, W) → float32 (1, 1, H, W) on ``device``."""
    x = to_float(img)
    return torch.from_numpy(np.ascontiguousarray(x))[None, None].to(device)


def _mask_tensors(masks: dict[int, np.ndarray], device) -> dict[int, torch.Tensor]:
    return {k: torch.from_numpy(v)[None, None].to(device) for k, v in masks.items()}


def style_target(vgg, style: np.ndarray, layers=STYLE_LAYERS, masks: dict[int, np.ndarray] | None = None) -> StyleTarget:
    """Grams of one style image, plain or per label mask (masks in the style image's own geometry)."""
    with torch.no_grad():
        feats = vgg(to_tensor(style, _device(vgg)), layers)
        if not masks:
            return StyleTarget(whole={l: gram(f) for l, f in feats.items()})
        target = StyleTarget()
        for label, m in _mask_tensors(masks, _device(vgg)).items():
            layer_masks = masks_for_layers(m, list(layers), vgg)
            target.by_label[label] = {l: masked_gram(feats[l], layer_masks[l]) for l in layers}
        return target


def average_style_target(vgg, styles: list[np.ndarray], layers=STYLE_LAYERS, mode: str = "gram") -> StyleTarget:
    """The average style of a set: ``mode="gram"`` averages the per-image Grams; ``mode="features"`` averages the
    feature maps (images must share a size) and takes the Gram of the mean."""
    if not styles:
        raise ValueError("average style needs at least one style image")
    with torch.no_grad():
        if mode == "gram":
            grams = [style_target(vgg, s, layers).whole for s in styles]
            return StyleTarget(whole={l: torch.stack([g[l] for g in grams]).mean(0) for l in layers})
        if mode == "features":
            if len({s.shape for s in styles}) != 1:
                raise ValueError("feature-space average style needs style images of one size (centre-crop them)")
            feats = [vgg(to_tensor(s, _device(vgg)), layers) for s in styles]
            return StyleTarget(whole={l: gram(torch.stack([f[l] for f in feats]).mean(0)) for l in layers})
    raise ValueError(f"average style mode must be 'gram' or 'features', got {mode!r}")


def run_nst(vgg, content: np.ndarray, target: StyleTarget, cfg: NSTConfig = NSTConfig(),
            content_masks: dict[int, np.ndarray] | None = None) -> NSTResult:
    """Optimise an image towards ``content`` (content features) and ``target`` (style Grams).
    ``content_masks`` are needed for an augmented (per-label) target: they mask the output's features."""
    cw, sw = cfg.weights()
    style_layers = target.layers
    layers = list(dict.fromkeys([cfg.content_layer, *style_layers]))
    device = _device(vgg)
    x_content = to_tensor(content, device)
    with torch.no_grad():
        content_feat = vgg(x_content, [cfg.content_layer])[cfg.content_layer]
    out_masks = {}
    if target.by_label:
        if not content_masks:
            raise ValueError("an augmented (per-label) style target needs the content's label masks")
        out_masks = {k: masks_for_layers(m, style_layers, vgg) for k, m in _mask_tensors(content_masks, device).items()}

    def terms(image):
        feats = vgg(image, layers)
        return cw * content_loss(feats[cfg.content_layer], content_feat), sw * style_loss(feats, target, out_masks)

    return optimise_image(x_content, terms, cfg)


def optimise_image(x_content: torch.Tensor, terms, cfg: NSTConfig, desc: str = "nst") -> NSTResult:
    """Adam on the image itself, from the content or from noise (``cfg.init``), in 0–255 pixel units (the thesis'
    step size), clamped to the valid range after every step; ``terms(image in [0, 1])`` gives the weighted
    (content, style) losses. Returns the image and the (total, content, style) curve."""
    if cfg.init == "content":
        image = x_content.clone()
    elif cfg.init == "noise":
        image = torch.rand(x_content.shape, generator=torch.Generator().manual_seed(cfg.seed)).to(x_content.device)
    else:
        raise ValueError(f"init must be 'content' or 'noise', got {cfg.init!r}")
    pixels = (image * PIXEL_SCALE).requires_grad_(True)
    opt = torch.optim.Adam([pixels], lr=cfg.lr)
    losses = []
    for _ in tqdm(range(cfg.iterations), desc=desc, unit="it", disable=not cfg.progress):
        content_term, style_term = terms(pixels / PIXEL_SCALE)
        loss = content_term + style_term
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            pixels.clamp_(0.0, PIXEL_SCALE)
        losses.append((loss.item(), content_term.item(), style_term.item()))
    return NSTResult((pixels.detach() / PIXEL_SCALE)[0, 0].cpu().numpy(), losses)


def augmented_target(vgg, style: np.ndarray, content_seg: np.ndarray, style_seg: np.ndarray | None = None,
                     layers=STYLE_LAYERS, whole_object: bool = True) -> tuple[StyleTarget, dict[int, np.ndarray]]:
    """Per-label style target and the content masks to pair with it. With a style segmentation, each image uses its
    own masks and only labels present in both count; without one, the content's masks mask the style too.
    ``whole_object`` adds the mask of all fetus labels together (key ``OBJECT``) as one more region."""
    content_masks = label_masks(content_seg)
    if whole_object and content_masks:
        content_masks[OBJECT] = object_mask(content_seg)
    if style_seg is None:
        if style.shape != content_seg.shape:
            raise ValueError("without a style segmentation the content masks mask the style: sizes must match")
        style_masks = content_masks
    else:
        style_masks = label_masks(style_seg)
        if whole_object and style_masks:
            style_masks[OBJECT] = object_mask(style_seg)
        common = set(content_masks) & set(style_masks)
        content_masks = {k: v for k, v in content_masks.items() if k in common}
        style_masks = {k: v for k, v in style_masks.items() if k in common}
    if not content_masks:
        raise ValueError("no label mask large enough (> 0.25 % of the image) is common to content and style")
    return style_target(vgg, style, layers, style_masks), content_masks


def run_local_nst(vgg, content: np.ndarray, style: np.ndarray, regions: dict[int, np.ndarray],
                  cfg: NSTConfig = NSTConfig()) -> NSTResult:
    """Local NST: each region (label → mask) is optimised on its own — content and style both restricted to the
    region — and the results are summed; pixels in no region keep the content."""
    total = np.zeros(content.shape, np.float32)
    covered = np.zeros(content.shape, np.float32)
    losses = None
    content_f = to_tensor(content)[0, 0].numpy()
    style_f = to_tensor(style)[0, 0].numpy()  # both as float [0, 1]
    for label, mask in regions.items():
        target = style_target(vgg, style_f * mask if style.shape == mask.shape else style_f, cfg.style_layers)
        result = run_nst(vgg, content_f * mask, target, cfg)
        total += result.image * mask
        covered += mask
        losses = result.losses if losses is None else [tuple(a + b for a, b in zip(p, q)) for p, q in zip(losses, result.losses)]
    rest = np.clip(1.0 - covered, 0.0, 1.0)
    return NSTResult(total + content_f * rest, losses or [])


def clear_background(image: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Thesis post-step: zero everything outside the foreground (the scan sector), where optimisation leaves noise."""
    return image * (foreground > 0)




def run_texture_nst(content: np.ndarray, styles: list[np.ndarray], cfg: NSTConfig = NSTConfig(),
                    content_weight: float = 1.0, style_weight: float = 1.0) -> NSTResult:
    """Optimisation NST without pretrained weights: the style term is the random-filter texture loss (Gram matrices
    of fixed random filter banks at three scales, offline.losses.RandomFilterTexture) against the average Grams of
    ``styles``; the content term is the L1 of low-passed images (anatomy, not speckle). The reference an offline
    user can compute on any machine; the VGG19 path (``run_nst``) stays the thesis' method."""
    from usnst.offline.losses import RandomFilterTexture, anatomy_loss

    texture = RandomFilterTexture(seed=cfg.seed)
    x_content = to_tensor(content)
    with torch.no_grad():
        per_style = [texture.image_grams(to_tensor(s)) for s in styles]
        target = [torch.stack([g[i] for g in per_style]).mean(0) for i in range(len(per_style[0]))]
    return optimise_image(x_content, lambda x: (content_weight * anatomy_loss(x, x_content),
                                                style_weight * texture.style_loss(x, target)), cfg, "texture nst")
