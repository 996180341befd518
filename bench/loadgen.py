"""A small closed-loop HTTP/1.1 load generator for the benchmarks (no dependencies).

`concurrency` keep-alive connections each send the next prepared request as soon as the
previous answer is read, until the requests run out or the time is up. Every request is
prepared before the clock starts (a token or SAML response must be fresh and single-use,
so they cannot be made up on the fly without measuring the signing too).

It shares the machine's cores with the server it measures, as the issue's targets assume;
the ratios against baselines measured the same way are what carry meaning.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    sent: int
    duration: float
    latencies: list[float] = field(repr=False)
    statuses: dict[int, int]
    unexpected: int
    first_unexpected: str = ""
    """The start of the first unexpected answer's body, to say why."""
    heads: list[str] = field(default_factory=list, repr=False)
    """With `keep_heads`: each request's status line and headers, by request index."""

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.duration if self.duration else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")

    @property
    def p99_ms(self) -> float:
        return self.percentile(0.99) * 1000

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": len(self.latencies),
            "seconds": round(self.duration, 3),
            "per_second": round(self.per_second, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "unexpected": self.unexpected,
            "first_unexpected": self.first_unexpected,
        }


def post_form(path: str, host: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def get(path: str, host: str, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes, str]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    body = await reader.readexactly(length) if length else b""
    return status, close, body, head


async def _run(
    host: str,
    port: int,
    requests: Sequence[bytes],
    concurrency: int,
    seconds: float,
    expect: frozenset[int],
    keep_heads: bool,
) -> LoadResult:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    unexpected = 0
    first_unexpected = ""
    heads = [""] * len(requests) if keep_heads else []
    next_index = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal next_index, unexpected, first_unexpected
        reader = writer = None
        while next_index < len(requests) and time.perf_counter() < deadline:
            index = next_index
            payload = requests[index]
            next_index += 1
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            start = time.perf_counter()
            writer.write(payload)
            try:
                status, close, body, head = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                status, close, body, head = 0, True, repr(exc).encode(), ""
            if keep_heads:
                heads[index] = head
            latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1
            if status not in expect:
                unexpected += 1
                first_unexpected = first_unexpected or body[:300].decode("utf-8", "replace")
            if close:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(
        sent=next_index,
        duration=time.perf_counter() - start,
        latencies=latencies,
        statuses=statuses,
        unexpected=unexpected,
        first_unexpected=first_unexpected,
        heads=heads,
    )


def run_load(
    port: int,
    requests: Sequence[bytes],
    concurrency: int = 8,
    seconds: float = 20.0,
    expect: frozenset[int] = frozenset({200, 302, 303}),
    host: str = "127.0.0.1",
    keep_heads: bool = False,
) -> LoadResult:
    """Send `requests` (each used once) over `concurrency` connections; bounded by `seconds`.

    `keep_heads` keeps every answer's head (for preparing requests from what the server
    answered, such as an OIDC login's redirect and cookie); off while measuring.
    """
    return asyncio.run(_run(host, port, requests, concurrency, seconds, expect, keep_heads))


def summary(timings: Sequence[float]) -> dict[str, float]:
    """Per second, p50 and p99 of in-process timings (seconds), for the one-thread baselines."""
    ordered = sorted(timings)
    n = len(ordered)
    return {
        "per_second": round(n / sum(ordered), 1),
        "p50_ms": round(ordered[n // 2] * 1000, 3),
        "p99_ms": round(ordered[int(n * 0.99) - 1] * 1000, 3),
    }


def merged(results: Sequence[LoadResult]) -> LoadResult:
    """Several timed runs of one scenario as one: their requests over their summed time."""
    statuses: dict[int, int] = {}
    for result in results:
        for status, count in result.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    return LoadResult(
        sent=sum(r.sent for r in results),
        duration=sum(r.duration for r in results),
        latencies=[latency for r in results for latency in r.latencies],
        statuses=statuses,
        unexpected=sum(r.unexpected for r in results),
        first_unexpected=next((r.first_unexpected for r in results if r.first_unexpected), ""),
    )


def alternate(
    scenarios: dict[str, tuple[int, Sequence[bytes]]],
    concurrency: int,
    seconds: float,
    rounds: int = 4,
) -> dict[str, LoadResult]:
    """Each scenario (a port and its single-use requests) in turn, `rounds` times.

    A shared machine's speed drifts by a factor of two within minutes: measured one
    after the other, a baseline and the bridge can each meet a different machine.
    Taking turns in short rounds gives both the same drift, so their ratio holds.
    """
    done: dict[str, list[LoadResult]] = {name: [] for name in scenarios}
    used = dict.fromkeys(scenarios, 0)
    for _ in range(rounds):
        for name, (port, requests) in scenarios.items():
            result = run_load(port, requests[used[name] :], concurrency, seconds / rounds)
            used[name] += result.sent
            done[name].append(result)
    return {name: merged(results) for name, results in done.items()}
