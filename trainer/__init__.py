"""Training the transform nets: the pieces every run shares (base), supervised L1 (supervised), distillation into the
real-time net (distill) and perceptual-loss training as in the thesis (perceptual). Losses come from offline.losses,
task weights from offline.tasks."""
