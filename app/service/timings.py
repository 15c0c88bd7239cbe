"""Stage timings of one operation, as a context manager (in the manner of autofaiss's ``Timeit``).

::

    t = Timings()
    with t.stage("decode"):
        ...
    t.ms  # {"decode": 3.1}

One :class:`Timings` record follows a query from the file to the hits; the UI, the API, the CLI and
the benchmark all read the same record (:attr:`app.service.search.QueryResult.timings_ms`).
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator


class Timings:
    """Milliseconds per named stage; a stage entered twice adds up."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t0) * 1000.0

    def rounded(self, digits: int = 2) -> dict[str, float]:
        return {k: round(v, digits) for k, v in self.ms.items()}
