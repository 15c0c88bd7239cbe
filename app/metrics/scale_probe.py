"""The searching process of the scale benchmark: a fresh ``python -m app.cli bench-scale --probe`` that opens
a :class:`~app.service.search.SearchService`, answers one query by vector (it prints ``FIRST`` then: the
startup to first answer), then, when asked, times queries one at a time and reports its memory.

Embedding is excluded: the service gets a :class:`~app.metrics.scale_data.SuppliedEmbedder` carrying the
collection's model and weights id (what the stores check) and searches with
:meth:`~app.service.search.SearchService.search_vector` (index candidates, exact re-scoring from the
memory-mapped vectors, αQE when on).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.config import Config
from app.errors import AppError
from app.index.faiss_store import read_manifest
from app.metrics.scale_data import SuppliedEmbedder

PROBE_TIMEOUT_S = 1800.0  # one searching process: load (hashing every file today) and its queries


def run_probe(config: Config, name: str, queries: Path | None, out: Path | None, *, k: int = 5,
              started: float | None = None) -> dict[str, Any]:
    """In the probe process: load ``name``, answer one query (print ``FIRST``), then with ``queries`` time
    them (αQE off and on, :func:`_timed`) and find their top ``k + 1`` (αQE off: recall); the result goes to ``out``."""
    from app.service.search import SearchService

    t0 = started if started is not None else time.perf_counter()
    m = read_manifest(config.indexes_dir, name)
    service = SearchService(config, embedder=SuppliedEmbedder(m.model_name, m.weights_id, m.dim))
    qs = np.load(queries) if queries is not None else None
    first = qs[0] if qs is not None else np.ones(m.dim, np.float32) / np.sqrt(m.dim)
    service.search_vector(name, first, k)
    first_s = time.perf_counter() - t0
    print("FIRST " + json.dumps({"first_answer_s": first_s}), flush=True)
    result: dict[str, Any] = {"first_answer_s": first_s}
    if qs is not None:
        result["ms_off"], result["ms_on"] = _timed(service, name, qs, k)
        result["ids"] = [[h.id for h in service.search_vector(name, q, k + 1, rerank=False).hits] for q in qs]
    result["memory"] = memory()
    if out is not None:
        out.write_text(json.dumps(result))
    return result


def _timed(service, name: str, qs: np.ndarray, k: int) -> tuple[list[float], list[float]]:
    """Each query timed with αQE off and on, in alternating order (even queries off first, odd ones on
    first), so neither mode alone pays for the first reads of the rows a query re-scores."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for i, q in enumerate(qs):
        for rerank in ((False, True) if i % 2 == 0 else (True, False)):
            t = time.perf_counter()
            service.search_vector(name, q, k, rerank=rerank)
            times[rerank].append((time.perf_counter() - t) * 1000.0)
    return times[False], times[True]


def memory() -> dict[str, float]:
    """This process's memory in MB (``/proc/self/status``): VmRSS, VmHWM (peak), RssAnon, RssFile."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = round(int(value.split()[0]) / 1024.0, 1)
    except OSError:
        pass
    return out


def spawn_probe(config: Config, name: str, *, queries: Path | None = None, out: Path | None = None,
                timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Run the probe in a fresh process; returns its result plus ``startup_s``: from starting the process to
    reading its first answer, measured here (interpreter, imports, loading the collection and the query)."""
    cmd = [sys.executable, "-m", "app.cli", "bench-scale", "--probe", "--collection", name,
           "--indexes", str(config.indexes_dir), "--features", str(config.features_dir)]
    if queries is not None:
        cmd += ["--probe-queries", str(queries), "--probe-out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                      os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    errors = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty stderr cannot block it
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
    watchdog = threading.Timer(timeout_s, proc.kill)  # bounds every read below
    watchdog.start()
    try:
        startup_s, lines = None, []
        assert proc.stdout is not None
        for line in proc.stdout:  # ends when the process does (or is killed)
            lines.append(line)
            if startup_s is None and line.startswith("FIRST "):
                startup_s = time.perf_counter() - t0
        proc.wait()
    finally:
        watchdog.cancel()
    errors.seek(0)
    stderr = errors.read()
    errors.close()
    if proc.returncode != 0 or startup_s is None:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        if proc.returncode == -9:
            tail = f"stopped after {timeout_s:.0f} s"
        raise AppError(f"The searching process for {name} failed: {tail}")
    first = next(line for line in lines if line.startswith("FIRST "))
    result = json.loads(out.read_text()) if out is not None else json.loads(first[6:])
    result["startup_s"] = startup_s  # from the start of the process to its first answer, on this clock
    return result
