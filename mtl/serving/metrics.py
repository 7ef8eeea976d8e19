"""The server's counters, written by hand in Prometheus' text format (version 0.0.4): a few counters, two
histograms and two gauges need no client library, and every value is updated on the event loop's thread."""
from collections import Counter
from typing import Iterable

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    """Cumulative buckets, sum and count, as Prometheus expects them."""

    def __init__(self, buckets: Iterable[float]) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * len(self.bounds)
        self.sum, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        rows = [f'{name}_bucket{{le="{_number(bound)}"}} {count}' for bound, count in zip(self.bounds, self.counts)]
        return rows + [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {_number(self.sum)}",
                       f"{name}_count {self.count}"]


class ServerMetrics:
    """What /metrics reports: predict requests by status code, errors by reason, request latency, texts, model
    batch sizes (texts per forward), batch failures, queue depth and readiness."""

    def __init__(self) -> None:
        self.requests: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.texts = 0

    def answered(self, code: int, seconds: float, texts: int = 0, reason: str | None = None) -> None:
        """One finished /predict request; `reason` names the error kind when it failed."""
        self.requests[code] += 1
        self.latency.observe(seconds)
        self.texts += texts
        if reason is not None:
            self.errors[reason] += 1

    def render(self, queue_depth: int, ready: bool) -> str:
        out: list[str] = []
        _family(out, "mtl_requests_total", "counter", "Predict requests answered, by HTTP status code.",
                [f'mtl_requests_total{{code="{code}"}} {n}' for code, n in sorted(self.requests.items())])
        _family(out, "mtl_request_errors_total", "counter", "Predict requests that failed, by reason "
                "(invalid: a 4xx answer; queue_full: 503; model: the model raised, 500).",
                [f'mtl_request_errors_total{{reason="{r}"}} {n}' for r, n in sorted(self.errors.items())])
        _family(out, "mtl_request_duration_seconds", "histogram", "Predict latency, from the request's arrival "
                "to its answer.", self.latency.lines("mtl_request_duration_seconds"))
        _family(out, "mtl_texts_total", "counter", "Texts predicted.", [f"mtl_texts_total {self.texts}"])
        _family(out, "mtl_batch_size", "histogram", "Texts per model batch (one encoder pass when they fit).",
                self.batch_size.lines("mtl_batch_size"))
        _family(out, "mtl_queue_depth", "gauge", "Texts waiting for the model.", [f"mtl_queue_depth {queue_depth}"])
        _family(out, "mtl_ready", "gauge", "1 when the model is loaded and warmed up.", [f"mtl_ready {int(ready)}"])
        return "\n".join(out) + "\n"


def _family(out: list[str], name: str, kind: str, help_text: str, rows: list[str]) -> None:
    out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *rows]


def _number(value: float) -> str:
    return repr(float(value))
