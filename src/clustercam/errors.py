"""Errors that end a run with one message (no traceback): something the user must provide."""


class ResourceUnavailableError(Exception):
    """A dataset or weight file is not on disk and cannot be fetched; the message says how."""
