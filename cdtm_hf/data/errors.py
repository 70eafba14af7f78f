"""The errors of the data sources: each names the problem and the remedy."""

from __future__ import annotations

__all__ = [
    "CorruptImageError", "DataDirRequiredError", "DatasetLayoutError", "IncompleteArchiveError", "MedicalDatasetError",
    "MissingColumnError",
    "MissingDependencyError",
]


class MedicalDatasetError(Exception):
    """Base class of the errors raised by the medical dataset builders."""


class DatasetLayoutError(MedicalDatasetError, ValueError):
    """The files on disk do not follow the expected layout (the message shows it)."""


class MissingColumnError(DatasetLayoutError):
    """A CSV lacks a required column (the message names the column and the CSV)."""


class CorruptImageError(MedicalDatasetError, ValueError):
    """One or more image files are missing or cannot be decoded (the message names them)."""


class DataDirRequiredError(MedicalDatasetError, FileNotFoundError):
    """No usable ``data_dir``; the message says where to get the archive."""


class MissingDependencyError(MedicalDatasetError, ImportError):
    """An optional dependency (e.g. pydicom for ``.dcm`` files) is not installed."""


class IncompleteArchiveError(MedicalDatasetError, ValueError):
    """An archive (``.tar.gz``, ``.zip``, ...) is cut short or damaged; the message names it and says to download it
    again (issue 17)."""
