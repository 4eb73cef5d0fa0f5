"""Errors the user can fix. ``theworld`` prints them as one ``theworld: error: ...`` paragraph, no traceback."""


class UserError(RuntimeError):
    """A problem with the run's inputs (config, base model ids, checkpoints, the Hub); the message names the fix."""
