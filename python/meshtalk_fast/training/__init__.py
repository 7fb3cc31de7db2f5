"""Training: configuration, deterministic batches, objectives, checkpoints, the two-stage trainer.

Import the trainer from ``meshtalk_fast.training.trainer`` (kept out of this module's import so that
``meshtalk_fast.evaluation.evaluate`` can use the batch types without a cycle)."""
from .batches import Clip, CropSampler, align, step_seed
from .config import TrainConfig, load_config

__all__ = ["Clip", "CropSampler", "align", "step_seed", "TrainConfig", "load_config"]
