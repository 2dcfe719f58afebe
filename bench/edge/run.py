"""What the edge checks cost per report: msgspec decoding alone against decoding plus the
domain.limits walk, in one process, on a typical report and on one with a `\\u` escape (the
walk's character scan runs only then). Medians of repeated rounds; the ratio is the figure.

    .venv/bin/python -m bench.edge.run [--rounds 7] [--reports 100000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import msgspec

from bench.classify.system import machine_context, print_context
from civicpulse.domain import limits
from civicpulse.domain.reports import ReportIn

TYPICAL = {
    "text": "Water pouring out of the road by the school near 5th and Main, deep hole",
    "lat": 34.05,
    "lon": -118.25,
    "address": "500 S Main St",
    "submitted_at": "2026-11-20T08:00:00Z",
    "attributes": {"source": "app", "n": 3},
    "media_urls": ["https://example.test/a.jpg"],
    "reporter": {"name": "Ann"},
}


def per_report_us(body: bytes, n: int, walk: bool) -> float:
    decoder = msgspec.json.Decoder(ReportIn)
    escaped = b"\\u" in body
    started = time.perf_counter()
    for _ in range(n):
        value = decoder.decode(body)
        if walk:
            limits.check(value, strings=escaped)
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="rounds per variant (7)")
    parser.add_argument("--reports", type=int, default=100_000, help="reports per round")
    args = parser.parse_args()
    print_context(machine_context())
    bodies = {
        "typical report": msgspec.json.encode(TYPICAL),
        "with a \\u escape": msgspec.json.encode(
            {**TYPICAL, "text": TYPICAL["text"] + " é"}
        ).replace("é".encode(), b"\\u00e9"),
    }
    print(f"{'body':<20} {'decode us':>10} {'decode+walk us':>15} {'walk us':>8} {'ratio':>6}")
    for name, body in bodies.items():
        plain = statistics.median(
            per_report_us(body, args.reports, False) for _ in range(args.rounds)
        )
        walked = statistics.median(
            per_report_us(body, args.reports, True) for _ in range(args.rounds)
        )
        print(
            f"{name:<20} {plain:>10.2f} {walked:>15.2f} {walked - plain:>8.2f} "
            f"{walked / plain:>6.2f}"
        )


if __name__ == "__main__":
    main()
