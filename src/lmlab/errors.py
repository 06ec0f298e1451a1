"""The error of an input lmlab refuses: a config value, a file or a combination it cannot use as the user meant.

Entry points print its message alone (no traceback unless HYDRA_FULL_ERROR=1) and exit with status 2; anything
else that goes wrong is a bug or an outage and keeps its traceback."""

from __future__ import annotations


class InputError(ValueError):
    """A refused input; the message names the input, what is wrong with it and what would be accepted."""


class MissingInputFile(InputError, FileNotFoundError):
    """A file or directory the config names does not exist."""
