"""The exceptions clustercam raises on purpose for mistakes a user can fix.

They carry no dependencies so that every layer (``explain`` included) can raise them. At the
command line only these (and the config errors of Hydra / OmegaConf) end a run with one line;
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A bad value, name, path or combination of settings; the message names it."""


class ResourceUnavailableError(UserError):
    """A dataset or weight file is not on disk and cannot be fetched; the message says how."""


class MissingDependencyError(UserError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` that adds it.

    Also an ``ImportError``, so ``except ImportError`` around an optional feature still works.
    """


class MissingFileError(ResourceUnavailableError, FileNotFoundError):
    """A file or folder the settings name does not exist; the message says what to give instead.

    Also a ``FileNotFoundError``, so ``except FileNotFoundError`` still catches it.
    """


class CheckpointError(UserError, FileNotFoundError):
    """``ckpt_path`` is missing, unreadable or a checkpoint of another model; the message names
    the file and what is wrong.

    Also a ``FileNotFoundError``, as the missing-checkpoint error was before.
    """


class MissingCheckpointError(CheckpointError, MissingFileError):
    """``ckpt_path`` names a file that does not exist (a :class:`MissingFileError` too)."""


class BadInputFileError(UserError):
    """An input file cannot be read and ``data.on_bad_file=error``; the message names it."""


class TrainingDivergedError(UserError):
    """Training produced a non-finite loss (or gradient norm); the message names the step,
    the value, the last good checkpoint and the settings to look at."""
