"""Opening an image file with one clear error when it is missing or unreadable."""

from __future__ import annotations

from PIL import Image, UnidentifiedImageError

from ltbench.errors import DataError


def open_rgb(path: str, entry: str, expected: str) -> Image.Image:
    """The image at ``path`` as RGB; ``entry`` says where it is listed, ``expected`` what layout was expected."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image missing: {path} ({entry}); expected {expected}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"image unreadable: {path} ({entry}): {e}") from None
