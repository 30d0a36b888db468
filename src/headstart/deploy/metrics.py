"""The server's counters, gauges and histograms, rendered as Prometheus text (exposition format 0.0.4)."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    """``{k="v",...}`` with the text format's escapes (backslash, quote, newline)."""
    def escape(value: str) -> str:
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in pairs) + "}" if pairs else ""


class Metrics:
    """What ``GET /metrics`` tells: requests by route and status, latencies, batch sizes, queue depth, errors by
    kind. Safe to update from the event loop and from worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self.gauges: dict[str, float] = {}
        self.histograms: dict[str, dict[tuple, list]] = defaultdict(dict)
        self.help: dict[str, tuple[str, str]] = {}

    def describe(self, name: str, kind: str, text: str) -> None:
        """Declare a metric's type and help line."""
        self.help[name] = (kind, text)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to a counter."""
        with self._lock:
            self.counters[name][tuple(sorted(labels.items()))] += value

    def set(self, name: str, value: float) -> None:
        """Set a gauge."""
        with self._lock:
            self.gauges[name] = value

    def observe(self, name: str, value: float, buckets: tuple[float, ...], **labels: str) -> None:
        """Count ``value`` into a histogram with upper bounds ``buckets``."""
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts, total = self.histograms[name].setdefault(key, [[0] * (len(buckets) + 1), [0.0], buckets])[:2]
            counts[bisect.bisect_left(buckets, value)] += 1
            total[0] += value

    def render(self) -> str:
        """The Prometheus text of every metric."""
        lines: list[str] = []
        with self._lock:
            for name in sorted({*self.help, *self.counters, *self.gauges, *self.histograms}):
                kind, text = self.help.get(name, ("untyped", name))
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                if name in self.gauges:
                    lines.append(f"{name} {self.gauges[name]:g}")
                for key, value in sorted(self.counters.get(name, {}).items()):
                    lines.append(f"{name}{_labels(key)} {value:g}")
                for key, (counts, total, buckets) in sorted(self.histograms.get(name, {}).items()):
                    running = 0
                    for bound, count in zip((*buckets, "+Inf"), counts):
                        running += count
                        lines.append(f"{name}_bucket{_labels((*key, ('le', str(bound))))} {running}")
                    lines += [f"{name}_sum{_labels(key)} {total[0]:.6f}", f"{name}_count{_labels(key)} {running}"]
        return "\n".join(lines) + "\n"
