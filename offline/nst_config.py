"""What an optimisation NST run is asked to do — its settings (NSTConfig), the job from files to files (NSTJob) and
the choices of each — importable without torch, so `usnst nst --help` builds its flags from them at once
(offline.nst runs them, offline.nst_job reads and writes the files)."""
from __future__ import annotations

from dataclasses import dataclass, field

from usnst.offline.tasks import DEFAULT_TASK, task

CONTENT_LAYER = "block5_conv2"  # VGG19 layers of the thesis' content and style losses
STYLE_LAYERS = ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1")
LOSS_NETWORKS = ("vgg", "random-filters")
TEXTURE_LR = 1.0  # grey levels per step for run_texture_nst: the thesis' 5e-3 (Keras units) barely moves it


@dataclass
class NSTConfig:
    task: str = DEFAULT_TASK
    content_weight: float | None = None  # None: the task's thesis weight (offline.tasks)
    style_weight: float | None = None
    lr: float = 5e-3
    iterations: int = 3000
    init: str = "content"  # or "noise"
    content_layer: str = CONTENT_LAYER
    style_layers: tuple[str, ...] = STYLE_LAYERS
    seed: int = 0
    progress: bool = False
    loss_network: str = "vgg"  # or "random-filters": no pretrained weights (run_texture_nst)

    def weights(self) -> tuple[float, float]:
        t = task(self.task)
        cw, sw = t.nst_content_weight, t.nst_style_weight
        return (cw if self.content_weight is None else self.content_weight,
                sw if self.style_weight is None else self.style_weight)



VARIANTS = ("plain", "augmented", "local")
AVERAGES = ("gram", "features")  # how a style folder is averaged (offline.nst.average_style_target)
INITS = ("content", "noise")  # what the optimised image starts from


@dataclass
class NSTJob:
    out: str
    content: str | None = None
    style: str | None = None
    content_seg: str | None = None
    style_seg: str | None = None
    triptych: str | None = None
    style_dir: str | None = None  # average style over a folder
    average: str = "gram"  # or "features"
    variant: str = "plain"
    size: int | None = None  # longest side; None keeps the input size
    clear_background: bool = False
    vgg_weights: str | None = None
    device: str = "cpu"  # "cuda" runs the optimisation on the GPU
    nst: NSTConfig = field(default_factory=NSTConfig)
