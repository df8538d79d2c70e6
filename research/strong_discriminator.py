"""`usnst train realism` with a wider, unconstrained PatchGAN (32-64-128 channels, no spectral norm) in place of the
trainer's (16-32-64, spectral norm): a teacher less easily fooled, for the whole-sector study (docs/lab/whole_sector.md,
stop 51: it too sat at chance, LSGAN loss 0.249 after 3,000 steps). The trainer's own discriminator is unchanged; this
replaces it for one run and passes every other argument to the CLI.

    python research/strong_discriminator.py train realism --data data/mean_train,data/mean_rf_fetal,data/mean_g_abdominal \
        --arch fast --channels 64 --blocks 8 --lr 0.0003 --d-lr 0.0002 --loss mse=1,adversarial=1 \
        --init engines/default_models/lq2hq_fast.pt --steps 3000 --val-every 3000 --threads 1 --out runs/adv_d/model.pt
"""
import sys

import usnst.trainer.realism as realism
from usnst.cli import main
from usnst.offline.patchgan import PatchGANConfig


def wider_unconstrained(conditional: bool = True) -> PatchGANConfig:
    return PatchGANConfig(conditional=conditional, channels=(32, 64, 128), spectral_norm=False)


if __name__ == "__main__":
    realism.PatchGANConfig = wider_unconstrained
    sys.exit(main(sys.argv[1:]))
