from typing import TYPE_CHECKING, Any

from theworld.callbacks.checkpoint import TrainableCheckpoint, TrainableCheckpointIO
from theworld.callbacks.evaluation import BenchmarkEvaluation
from theworld.callbacks.progress import TrainingProgress

if TYPE_CHECKING:
    from theworld.callbacks.hub_sync import HubSyncCallback

__all__ = [
    "BenchmarkEvaluation",
    "HubSyncCallback",
    "TrainableCheckpoint",
    "TrainableCheckpointIO",
    "TrainingProgress",
]


def __getattr__(name: str) -> Any:
    # The Hub sync and its upload machinery are imported when first used: a run that pushes nothing (and every
    # mistake `theworld` reports before a run) never needs them. The CLI adds the callback itself.
    if name == "HubSyncCallback":
        from theworld.callbacks.hub_sync import HubSyncCallback

        return HubSyncCallback
    raise AttributeError(f"module 'theworld.callbacks' has no attribute {name!r}")
