"""Progress reports and cancellation for long operations (builds, incremental updates, adds).

Every long service function takes ``progress`` (a :data:`ProgressFn`, called with a
:class:`Progress` at each step) and ``cancel`` (a :data:`CancelFn`, asked between steps; when it
returns True the function stops with :class:`~app.errors.OperationCancelled` and nothing it had not
committed is visible). Both may be None. They are called from the thread doing the work.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

PHASES = ("scanning", "reading", "embedding", "indexing", "saving", "milvus", "objects")


@dataclass(frozen=True)
class Progress:
    """Where a long operation is: its phase, ``done`` of ``total`` steps, and for embedding the speed."""

    phase: str  # one of PHASES: listing files, hashing them, the model, the index, writing, Milvus, objects
    done: int = 0
    total: int = 0
    images_per_s: float = 0.0
    eta_s: float | None = None  # seconds left in this phase, when it can be estimated
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


ProgressFn = Callable[[Progress], None]
CancelFn = Callable[[], bool]


class Reporter:
    """Turns ``(done, total)`` steps into :class:`Progress` reports with a rate and an ETA."""

    def __init__(self, fn: ProgressFn | None) -> None:
        if fn is not None and not callable(fn):  # a bool meant for progress_bar= (the bar) lands here
            raise TypeError(f"progress is a callback taking a Progress, not {fn!r}; progress_bar= is the bar")
        self.fn = fn
        self.phase_name = ""
        self._t0 = time.perf_counter()

    def phase(self, phase: str, *, total: int = 0, message: str = "") -> None:
        self.phase_name, self._t0 = phase, time.perf_counter()
        if self.fn is not None:
            self.fn(Progress(phase, 0, total, message=message))

    def step(self, done: int, total: int, *, start: int = 0) -> None:
        """``done`` of ``total``; ``start`` steps were already done when the phase began (a resume)."""
        if self.fn is None:
            return
        elapsed = time.perf_counter() - self._t0
        rate = (done - start) / elapsed if elapsed > 0 and done > start else 0.0
        eta = (total - done) / rate if rate > 0 else None
        self.fn(Progress(self.phase_name, done, total, rate if self.phase_name == "embedding" else 0.0, eta))
