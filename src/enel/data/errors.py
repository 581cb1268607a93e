"""Errors and warnings of the dataset loaders.

:class:`DatasetError` derives from :class:`enel.errors.EnelError`, so the CLI prints it as a one-line
``error: <message>``. Every message names the file (and, for annotation JSON, the record index and object id)
and says what to fix.
"""

from __future__ import annotations

from ..errors import EnelError

__all__ = ["DatasetError", "UnsafePickleError", "DatasetWarning"]


class DatasetError(EnelError, ValueError):
    """A dataset file (annotation JSON, point file, ModelNet40 archive) is missing, malformed or unusable."""


class UnsafePickleError(DatasetError):
    """A pickle was refused: no explicit opt-in, or it references something other than plain numpy data."""


class DatasetWarning(UserWarning):
    """Samples were skipped while building a dataset (counts and example ids are in the message)."""
