from theworld.callbacks.checkpoint import TrainableCheckpoint, TrainableCheckpointIO

__all__ = ["TrainableCheckpoint", "TrainableCheckpointIO"]
