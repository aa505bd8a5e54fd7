"""The training engine: the Trainer, its callbacks, checkpoints."""
from .callbacks import Callback, Checkpoint, EarlyStopping, GradientNorms, JSONLLogger, ProgressBar, TensorBoardLogger
from .seeding import seed_everything
from .trainer import Trainer, TrainingDiverged, resolve_device

__all__ = ["Callback", "Checkpoint", "EarlyStopping", "GradientNorms", "JSONLLogger", "ProgressBar",
           "TensorBoardLogger", "Trainer", "TrainingDiverged", "resolve_device", "seed_everything"]
