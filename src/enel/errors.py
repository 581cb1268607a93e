"""Exceptions that user-facing entry points turn into one-line messages.

Every error raised on bad user input derives from :class:`EnelError`; the CLI prints ``error: <message>`` and
exits with a non-zero status instead of showing a traceback.
"""

from __future__ import annotations


class EnelError(Exception):
    """Base class for errors caused by user input (files, flags, configs, uploads)."""


class PointCloudError(EnelError, ValueError):
    """A point-cloud file or array could not be used; the message names the file and the problem."""


class ConfigError(EnelError, ValueError):
    """A configuration, recipe or flag value is invalid; the message names the field and the fix."""


class ModelLoadError(EnelError, RuntimeError):
    """A model or backbone could not be loaded; the message says what is supported or what to run."""


class StorageError(EnelError, OSError):
    """Something could not be written (a full disk, a missing permission); the message names the path, the cause,
    what was kept and how to continue."""
