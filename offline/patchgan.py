"""PatchGAN discriminator (pix2pix, Isola et al. 2017): a small fully convolutional net that scores every ~34×34
patch as real or generated, so it judges texture — the speckle — rather than the whole image.

Conditional for paired tasks (it sees the input beside the output, so it can insist the speckle fits the anatomy),
unconditional for unpaired style sets. Spectral normalisation (Miyato et al. 2018) on every conv keeps it from
overpowering the generator; with LSGAN its loss stayed 0.20–0.25 in the pilot (16-32-64 channels, 4×4 kernels).
But 0.25 is an LSGAN discriminator at chance, while a patch classifier trained afterwards on the outputs still
tells them from HQ: ``spectral_norm=False`` offers an unconstrained discriminator, a stronger and less stable
teacher (the generator's anatomy and speckle terms anchor it).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


@dataclass(frozen=True)
class PatchGANConfig:
    conditional: bool = True  # input frame concatenated with the output
    channels: tuple[int, ...] = (16, 32, 64)
    spectral_norm: bool = True

    def to_dict(self) -> dict:
        return {**asdict(self), "channels": list(self.channels)}


class PatchDiscriminator(nn.Module):
    def __init__(self, config: PatchGANConfig = PatchGANConfig()):
        super().__init__()
        self.config = config
        layers, c_in = [], 2 if config.conditional else 1
        norm = spectral_norm if config.spectral_norm else (lambda conv: conv)
        for i, c in enumerate(config.channels):
            stride = 2 if i < len(config.channels) - 1 else 1
            layers += [norm(nn.Conv2d(c_in, c, 4, stride, 1)), nn.LeakyReLU(0.2)]
            c_in = c
        layers.append(norm(nn.Conv2d(c_in, 1, 4, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Patch scores (N, 1, h, w) for ``image`` (N, 1, H, W), given the input frame when conditional."""
        if self.config.conditional:
            image = torch.cat([condition, image], dim=1)
        return self.net(image)
