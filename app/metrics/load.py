"""Load: N concurrent clients on the app's named API endpoints, and the server's memory meanwhile.

:func:`run_load` drives a running app (``gradio_client``, one client per thread) with a seeded mix:
new images (``/search_file`` with a photo no client sent before), reused collection items
(``/search_item``), image URLs from a local file server (``/search_url``) and a few invalid inputs
(a text file named ``.jpg``, whose answer must be the app's "not an image" message). Before the
concurrent phase one client alone measures ``single_client_p50_ms``, the yardstick of the p95
target. Expected answers are not errors: "not an image" for the invalid inputs, and a "queue is
full" refusal (counted as ``busy_rejections``). Anything else is an error. The server's resident
memory is sampled from ``/proc`` twice a second.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

MIX = (("new", 0.40), ("item", 0.40), ("url", 0.15), ("invalid", 0.05))
SINGLE_CLIENT_S = 6.0  # the single-client phase
PLATEAU_AT_S = 10.0  # memory must plateau after this point of the concurrent phase
BUSY_WORDS = ("queue is full", "busy")


@dataclass
class LoadInputs:
    """What the clients send: photo files (each new image once), URLs of photos, item ids, a non-image file."""

    collection: str
    photos: list[Path]
    urls: list[str]
    item_count: int
    invalid: Path
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def new_photo(self) -> Path:
        """A photo no client has sent yet (they repeat, as remembered vectors, only once all are used)."""
        with self._lock:
            self._next += 1
            return self.photos[(self._next - 1) % len(self.photos)]


def rss_mb(pid: int) -> float | None:
    """The resident memory of process ``pid`` in MB (None if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError):
        return None
    return None


class MemorySampler:
    """Samples a process's RSS every ``interval`` seconds in a thread: (seconds since start, MB)."""

    def __init__(self, pid: int | None, interval: float = 0.5) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MemorySampler":
        self.t0 = time.monotonic()
        if self.pid is not None:
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            mb = rss_mb(self.pid)
            if mb is not None:
                self.samples.append((time.monotonic() - self.t0, mb))
            self._stop.wait(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def at(self, seconds: float) -> float | None:
        """The first sample at or after ``seconds`` (the last one if the run was shorter)."""
        later = [mb for t, mb in self.samples if t >= seconds]
        return later[0] if later else (self.samples[-1][1] if self.samples else None)


class ApiError(Exception):
    """The app answered an API call with an error (its message)."""


class ApiClient:
    """A minimal client of Gradio's REST call API: ``POST /gradio_api/call/NAME``, then the answer's
    event stream; files go through ``POST /gradio_api/upload`` first."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=timeout)
        self._info: dict[str, Any] | None = None

    def file(self, path: Path) -> dict[str, Any]:
        with open(path, "rb") as fh:
            r = self.http.post(f"{self.url}/gradio_api/upload", files={"files": (path.name, fh, "image/jpeg")})
        if r.status_code != 200:
            raise ApiError(f"upload: HTTP {r.status_code} {r.text[:200]}")
        return {"path": r.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def defaults(self, api_name: str) -> list[Any]:
        """The endpoint's parameter defaults, from the app's API description (Gradio's REST call needs every
        argument: the ones not given are filled in with these, as ``gradio_client`` does)."""
        if self._info is None:
            r = self.http.get(f"{self.url}/gradio_api/info")
            if r.status_code != 200:
                raise ApiError(f"info: HTTP {r.status_code} {r.text[:200]}")
            self._info = r.json().get("named_endpoints", {})
        params = self._info.get(api_name, {}).get("parameters", [])
        return [q.get("parameter_default") for q in params]

    def predict(self, *data: Any, api_name: str) -> Any:
        import json

        name = api_name.strip("/")
        full = list(data) + self.defaults(api_name)[len(data):]
        r = self.http.post(f"{self.url}/gradio_api/call/{name}", json={"data": full})
        if r.status_code != 200:
            raise ApiError(f"HTTP {r.status_code} {r.text[:200]}")
        event_id = r.json()["event_id"]
        event = None
        with self.http.stream("GET", f"{self.url}/gradio_api/call/{name}/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    payload = json.loads(line[5:].strip() or "null")
                    if event == "error":
                        raise ApiError(str(payload))
                    return payload[0]
        raise ApiError(f"{name}: the answer stream ended without a result")


def one_request(client: ApiClient, kind: str, inputs: LoadInputs, rng: random.Random) -> str:
    """Send one request of ``kind``; returns "ok", "busy" or "invalid-ok"; raises on an unexpected answer."""
    c = inputs.collection
    try:
        if kind == "new":
            r = client.predict(client.file(inputs.new_photo()), c, 5, api_name="/search_file")
        elif kind == "item":
            r = client.predict(c, rng.randrange(inputs.item_count), 5, api_name="/search_item")
        elif kind == "url":
            r = client.predict(rng.choice(inputs.urls), c, 5, api_name="/search_url")
        else:
            client.predict(client.file(inputs.invalid), c, 5, api_name="/search_file")
            raise RuntimeError("an invalid input was searched")
    except ApiError as exc:
        text = str(exc).lower()
        if any(w in text for w in BUSY_WORDS):
            return "busy"
        if kind == "invalid" and "not an image" in text:
            return "invalid-ok"
        raise
    if not r.get("hits"):
        raise RuntimeError(f"{kind}: no hits")
    return "ok"


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    busy: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ms: float, outcome: str | None, error: str | None = None) -> None:
        with self.lock:
            self.requests += 1
            if error is not None:
                self.errors.append(error)
            elif outcome == "busy":
                self.busy += 1
            else:
                self.latencies_ms.append(ms)


def client_loop(make_client: Callable[[], Any], inputs: LoadInputs, tally: Tally, deadline: float, seed: int,
                max_requests: int | None = None) -> None:
    """One client: requests back to back until ``deadline`` (or ``max_requests``)."""
    rng = random.Random(seed)
    kinds, weights = zip(*MIX, strict=True)
    client = make_client()
    n = 0
    while time.monotonic() < deadline and (max_requests is None or n < max_requests):
        kind = rng.choices(kinds, weights)[0]
        t = time.perf_counter()
        try:
            outcome, error = one_request(client, kind, inputs, rng), None
        except Exception as exc:  # noqa: BLE001 - every unexpected answer is counted and reported
            outcome, error = None, f"{kind}: {type(exc).__name__}: {str(exc)[:200]}"
        tally.add((time.perf_counter() - t) * 1000.0, outcome, error)
        n += 1


def run_clients(make_client: Callable[[], Any], inputs: LoadInputs, clients: int, seconds: float,
                seed: int = 0) -> tuple[Tally, float]:
    """``clients`` threads for ``seconds``; (tally, wall seconds)."""
    tally = Tally()
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=client_loop, args=(make_client, inputs, tally, deadline, seed + i), daemon=True)
               for i in range(clients)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=seconds + 120)  # a request in flight at the deadline still finishes
    return tally, time.monotonic() - t0


def run_load(url: str, inputs: LoadInputs, *, clients: int, seconds: float, server_pid: int | None,
             seed: int = 0) -> dict[str, Any]:
    """The single-client yardstick, then ``clients`` clients for ``seconds``; the spelled-out keys."""

    def make_client() -> ApiClient:
        return ApiClient(url)

    warm = make_client()
    for kind in ("new", "item", "url"):
        one_request(warm, kind, inputs, random.Random(seed))
    single, _ = run_clients(make_client, inputs, 1, SINGLE_CLIENT_S, seed=seed + 1000)
    with MemorySampler(server_pid) as memory:
        tally, wall = run_clients(make_client, inputs, clients, seconds, seed=seed)
    return summarize_load(tally, wall, single, memory, clients, seconds)


def summarize_load(tally: Tally, wall: float, single: Tally, memory: MemorySampler, clients: int,
                   seconds: float) -> dict[str, Any]:
    lat = tally.latencies_ms or [float("nan")]

    def pct(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)), 1) if values else float("nan")

    samples = [mb for _, mb in memory.samples]
    r: dict[str, Any] = {
        "requests": tally.requests, "errors": len(tally.errors), "rps": round(tally.requests / wall, 2),
        "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99),
        "rss_mb_start": samples[0] if samples else None, "rss_mb_end": samples[-1] if samples else None,
        "rss_mb_max": max(samples) if samples else None, "busy_rejections": tally.busy,
        "single_client_p50_ms": pct(single.latencies_ms, 50), "rss_mb_at_10s": memory.at(PLATEAU_AT_S),
        "clients": clients, "seconds": seconds, "error_examples": tally.errors[:5] + single.errors[:2],
    }
    r["targets"] = load_targets(r)
    return r


def load_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """0 errors; p95 <= 10 x the single-client p50; RSS at the end within 10% of its level at 10 s."""
    out = [{"target": "no errors", "value": r["errors"], "limit": 0, "pass": r["errors"] == 0},
           {"target": "p95 <= 10 x single-client p50", "value": r["p95_ms"],
            "limit": round(10 * r["single_client_p50_ms"], 1), "pass": r["p95_ms"] <= 10 * r["single_client_p50_ms"]}]
    if r["rss_mb_at_10s"] is not None and r["rss_mb_end"] is not None:
        limit = round(1.10 * r["rss_mb_at_10s"], 1)
        out.append({"target": "RSS at the end within 10% of RSS at 10 s", "value": r["rss_mb_end"],
                    "limit": limit, "pass": r["rss_mb_end"] <= limit})
    return out
