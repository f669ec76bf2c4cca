"""Which files of a photo folder can be read, found before the run starts.

A folder of 50,000 photos often holds a few files that are not images, are empty, or were
cut off in a copy. They are found at setup by a cheap check, so a long run does not end
hours later on one of them: PIL opens each file (it reads the header only) and verifies it
(a PNG's chunk checksums); a JPEG must end with its end-of-image marker (``FF D9``), and one
that does not (a cut-off copy, or data appended after the image) is decoded in full to tell
the two apart. ``on_bad_file="skip"`` leaves such files out with one warning line each and a
count; ``"error"`` stops at the first one, naming it. The check depends on the files only,
so every DDP rank reaches the same list.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from PIL import Image, UnidentifiedImageError

from clustercam.exceptions import BadInputFileError, UserError

log = logging.getLogger(__name__)

ON_BAD_FILE = ("skip", "error")
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
# bytes at the end of a JPEG searched for the end-of-image marker (padding after it is legal)
_TAIL = 1024


@dataclass(frozen=True)
class SkippedInput:
    """One input left out of the run: the file (and row, for a table) and why."""

    file: str
    reason: str


def check_on_bad_file(value: str) -> str:
    """``value`` if it is one of :data:`ON_BAD_FILE`, else a UserError naming it."""
    if value not in ON_BAD_FILE:
        raise UserError(f"data.on_bad_file must be one of {ON_BAD_FILE}, got {value!r}")
    return value


def image_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an image (one line), or None when it can.

    Cheap for a good file: the header and, for a JPEG, the last kilobyte are read; a PNG's
    chunks are read (not decompressed) to check their checksums.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty (0 bytes)"
        with Image.open(path) as img:
            fmt = img.format
            img.verify()
        if fmt == "JPEG" or path.suffix.lower() in JPEG_SUFFIXES:
            with open(path, "rb") as fh:
                fh.seek(max(0, size - _TAIL))
                if b"\xff\xd9" not in fh.read():
                    with Image.open(path) as img:  # cut off, or data after the image?
                        img.load()
    except UnidentifiedImageError:
        return "not an image (PIL cannot identify it)"
    except (OSError, SyntaxError, ValueError) as err:  # truncated, bad checksum, bad header
        text = " ".join(str(err).split()) or type(err).__name__
        return f"truncated or corrupt ({text})"
    return None


def check_image_files(
    paths: Sequence[Path],
    on_bad_file: str = "skip",
    limit: int | None = None,
    problem: Callable[[Path], str | None] = image_problem,
) -> tuple[list[int], list[SkippedInput]]:
    """Check ``paths`` in order; returns the indices of the readable files and the skipped ones.

    Args:
        paths: image files, in the order the dataset uses them.
        on_bad_file: ``skip`` (a warning line per bad file, a count at the end) or ``error``.
        limit: stop once this many readable files are found (``max_images``): the files
            after them are not read.
        problem: the check of one file (:func:`image_problem`).

    Returns:
        ``(kept, skipped)``: indices into ``paths`` of the readable files, and the bad ones.

    Raises:
        BadInputFileError: a bad file with ``on_bad_file="error"``, naming it.
    """
    check_on_bad_file(on_bad_file)
    warn = log.warning if rank_zero_only.rank == 0 else log.debug  # once, not once per rank
    kept: list[int] = []
    skipped: list[SkippedInput] = []
    for i, path in enumerate(paths):
        if limit is not None and len(kept) >= limit:
            break
        reason = problem(path)
        if reason is None:
            kept.append(i)
            continue
        if on_bad_file == "error":
            raise BadInputFileError(
                f"cannot read image file {str(path)!r}: {reason}; remove or replace it, or set "
                "data.on_bad_file=skip to leave unreadable files out")
        warn("skipping %s: %s", path, reason)
        skipped.append(SkippedInput(str(path), reason))
    if skipped:
        warn("%d of %d image files skipped: they cannot be read", len(skipped),
             len(kept) + len(skipped))
    return kept, skipped


def read_image(path: str | Path) -> Image.Image:
    """The RGB image of ``path``; a file that fails to decode now (it passed the check at
    setup: damage inside the compressed data) is an error naming the file, not PIL's."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError) as err:
        text = " ".join(str(err).split()) or type(err).__name__
        raise BadInputFileError(
            f"cannot read image file {str(path)!r}: truncated or corrupt ({text}); it passed the "
            "check at setup (damage inside the image data); remove or replace it") from None
