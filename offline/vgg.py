"""VGG19 feature extractor: the loss network of Gatys NST and perceptual-loss training.

Defined here (no torchvision needed) with the exact module indices of torchvision's ``vgg19().features``, so the
standard ImageNet state dict (``vgg19-dcbb9e9d.pth``) loads as is. Layers carry the Keras names the thesis uses
(``block1_conv1`` … ``block5_conv4``); a named layer's output is taken after its ReLU, as in Keras.
"""
from __future__ import annotations

import logging
import os

import torch
from torch import nn

from usnst.offline.weights import WeightsNotFound, find_weights, frozen

log = logging.getLogger(__name__)

WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"
WEIGHTS_URL = f"https://download.pytorch.org/models/{WEIGHTS_FILE}"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM = "random"

# (block, convs per block) of VGG19; a 2×2 max-pool follows each block.
_BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))


class VGGWeightsError(WeightsNotFound):
    """Weights that are not a torchvision VGG19 state dict."""


def layer_names() -> list[str]:
    return [f"block{b}_conv{c}" for b, n in _BLOCKS for c in range(1, n + 1)]


class VGG19Features(nn.Module):
    """``forward(x, layers)`` → {name: activation} for grayscale or RGB images in [0, 1], shape (N, C, H, W).
    Only the layers up to the deepest one requested are run."""

    def __init__(self):
        super().__init__()
        modules, self.index = [], {}  # index: layer name → position of its ReLU in ``features``
        c_in = 3
        for block, n in _BLOCKS:
            c_out = min(64 * 2 ** (block - 1), 512)
            for conv in range(1, n + 1):
                modules += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=False)]
                self.index[f"block{block}_conv{conv}"] = len(modules) - 1
                c_in = c_out
            modules.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*modules)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.weights_source = "uninitialised"

    def pools_before(self, layer: str) -> int:
        """How many 2×2 pools precede ``layer``: its feature map is the input size halved this many times."""
        return int(layer.split("_")[0][len("block"):]) - 1

    def convs_before(self, layer: str) -> list[str]:
        """The conv layers from the input up to and including ``layer``, in order."""
        names = layer_names()
        return names[: names.index(layer) + 1]

    def forward(self, x: torch.Tensor, layers: list[str] | tuple[str, ...]) -> dict[str, torch.Tensor]:
        unknown = set(layers) - set(self.index)
        if unknown:
            raise KeyError(f"unknown VGG19 layers {sorted(unknown)}; known: {', '.join(layer_names())}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale ultrasound → the three channels VGG was trained on
        x = (x - self.mean) / self.std
        wanted = {self.index[name]: name for name in layers}
        last = max(wanted)
        out = {}
        for i, module in enumerate(self.features):
            x = module(x)
            if i in wanted:
                out[wanted[i]] = x
            if i == last:
                break
        return out


def _random_weights(model: VGG19Features, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            # He initialisation keeps activations from vanishing through 16 ReLU layers.
            std = (2.0 / (m.in_channels * 9)) ** 0.5
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
                m.bias.zero_()


def load_vgg19(weights: str | os.PathLike | None = None, seed: int = 0, download: bool = True) -> VGG19Features:
    """VGG19 in eval mode with frozen parameters.

    ``weights``: a path to a torchvision-format state dict; None to look in $USNST_VGG_WEIGHTS and the torch hub
    cache, then download from ``WEIGHTS_URL`` when online; or ``"random"`` for seeded random weights (tests and
    offline machines — results are then not ImageNet-perceptual, and ``weights_source`` says so)."""
    model = VGG19Features()
    if weights == RANDOM:
        _random_weights(model, seed)
        model.weights_source = f"random (seed {seed})"
    else:
        path = find_weights(weights, WEIGHTS_FILE, WEIGHTS_URL, "USNST_VGG_WEIGHTS", "--vgg-weights", download)
        state = torch.load(path, map_location="cpu", weights_only=True)
        features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        try:
            model.features.load_state_dict(features)
        except RuntimeError as exc:
            raise VGGWeightsError(f"{path} is not a torchvision VGG19 state dict: {exc}") from exc
        model.weights_source = str(path)
    return frozen(model)
