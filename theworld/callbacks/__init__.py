from theworld.callbacks.checkpoint import TrainableCheckpoint, TrainableCheckpointIO
from theworld.callbacks.evaluation import BenchmarkEvaluation
from theworld.callbacks.hub_sync import HubSyncCallback
from theworld.callbacks.progress import TrainingProgress

__all__ = [
    "BenchmarkEvaluation",
    "HubSyncCallback",
    "TrainableCheckpoint",
    "TrainableCheckpointIO",
    "TrainingProgress",
]
