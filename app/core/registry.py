"""Looking a name up in a registry of data (the embedding models, the detectors): one rule for both."""

from __future__ import annotations

from typing import Mapping, TypeVar

from app.errors import UnknownModelError

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str | T | None, *, default: str, what: str, entry_type: type) -> T:
    """The entry ``name`` names (case and surrounding spaces ignored; None: ``default``); an entry given
    itself is returned as it is. An unknown name is an :class:`~app.errors.UnknownModelError` listing the
    choices."""
    if isinstance(name, entry_type):
        return name  # type: ignore[return-value]
    key = (name or default).strip().lower()  # type: ignore[union-attr]
    if key not in registry:
        raise UnknownModelError(f"Unknown {what} {name!r}.", hint=f"Choose one of: {', '.join(registry)}.")
    return registry[key]
