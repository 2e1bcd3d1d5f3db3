"""The image data layout obert-train's and obert-deploy's image readers share.

Both read an image classification data set from a class-per-subfolder folder (files with one
of :data:`IMAGE_EXTENSIONS`) or an ``.npz`` file with the arrays :data:`IMAGE_NPZ_KEYS`
(``images``, ``labels``, optionally ``label_names``).
"""

from __future__ import annotations

__all__ = ["IMAGE_EXTENSIONS", "IMAGE_NPZ_KEYS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""File endings read as images in a class folder (other files are ignored)."""

IMAGE_NPZ_KEYS = ("images", "labels", "label_names")
"""The arrays of an image ``.npz``: ``N×H×W×C`` (or ``N×C×H×W``) images, ``N`` class ids and
the optional class names in id order."""
