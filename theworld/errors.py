"""Errors the user can fix. ``theworld`` prints them as one ``theworld: error: ...`` paragraph, no traceback."""


class UserError(RuntimeError):
    """A problem with the run's inputs (config, base model ids, checkpoints, the Hub); the message names the fix.

    ``exit_code``: 2 for a config the parser should have refused (as argparse exits), 1 for everything else.
    """

    exit_code = 1


class ConfigError(UserError):
    """A config value or file the run cannot use, found right after parsing."""

    exit_code = 2
