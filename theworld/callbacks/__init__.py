from theworld.callbacks.checkpoint import TrainableCheckpoint, TrainableCheckpointIO
from theworld.callbacks.hub_sync import HubSyncCallback

__all__ = ["HubSyncCallback", "TrainableCheckpoint", "TrainableCheckpointIO"]
