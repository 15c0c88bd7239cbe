"""Typed errors raised by the core.

Only the UI (``app.web``) and the CLI (``app.cli``) turn these into messages for people.
Every error carries a one-line, human-readable ``str()``; ``hint`` says what to do next.
"""

from __future__ import annotations


class AppError(Exception):
    """Base class of every error the core raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def user_message(self) -> str:
        msg = str(self)
        return f"{msg} {self.hint}" if self.hint else msg


class InvalidImageError(AppError):
    """The input is not an image we accept (unknown format, truncated, empty, too large...)."""


class FetchError(AppError):
    """An image URL could not be fetched (refused address, timeout, too large, HTTP error...)."""


class WeightsError(AppError):
    """Model weights are missing, unreadable or do not match what an index was built with."""


class DatasetError(AppError):
    """A dataset folder is missing or not in the expected layout."""


class DownloadError(AppError):
    """A download failed (network, checksum, unsafe archive)."""


class IndexMissingError(AppError):
    """No index has been built for the requested collection."""


class IndexMismatchError(AppError):
    """An index exists but its manifest does not match the file, the features or the model."""


class UnknownItemError(AppError):
    """A collection item id that does not exist was requested."""


class UnknownModelError(AppError):
    """A model name that is not in the registry (``app.core.models``)."""


class ManifestError(IndexMismatchError):
    """An index manifest lacks a field, has one of the wrong type, or has an unknown schema version.

    ``fields`` names the offending fields (the message names them too).
    """

    def __init__(self, message: str, *, fields: tuple[str, ...] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.fields = tuple(fields)


class UnsupportedOperationError(AppError):
    """A vector store cannot do what was asked (for example remove ids from a flat faiss index, which
    would renumber every later row)."""


class StorageError(AppError):
    """A file could not be written: the disk is full, read-only, or the folder is not writable."""


class OperationCancelled(AppError):
    """A long operation (a build, an incremental update) was cancelled; what it saved is kept."""


class CollectionBusyError(AppError):
    """Another change to the same collection is running (the CLI, the app, another process)."""


class BuildLockedError(CollectionBusyError):
    """Another process is building or changing the same collection: ``path`` is the lock file, ``pid``
    the holder (None when it could not be read)."""

    def __init__(self, message: str, *, path: str, pid: int | None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path
        self.pid = pid


class CollectionExistsError(AppError):
    """A collection of that name exists already (rename, or a new collection's name)."""


class BackendUnavailableError(AppError):
    """A search backend (a Milvus server) cannot be reached or did not answer in time."""


class DetectorUnavailableError(AppError):
    """The object detector is not installed, or its model file fails its checksum (missing, truncated,
    altered); the hint is the command that installs it again. Everything else keeps working."""


class InvalidBoxError(AppError):
    """A box (an object's region of a photo) is empty, of zero size once clipped to the image, or
    not four numbers."""
