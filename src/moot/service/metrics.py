"""What /metrics reports about the live side: plain numbers kept by the runtime and the hubs.

They are plain attributes so that counting costs nothing on the hot path; `MetricsCollector` turns them into
Prometheus families on each scrape, for a registry of the app's own (no global state between apps or tests):

    registry = CollectorRegistry()
    registry.register(MetricsCollector(manager.metrics, running=lambda: len(manager.running())))
    body = generate_latest(registry)
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

# Seconds: a first token comes in well under a second from a local model, a turn can take minutes.
LATENCY_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass
class Histogram:
    """Counts per bucket (not cumulative), their sum and count: what a Prometheus histogram needs."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last bucket is +Inf

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """(upper bound, observations at or below it), ending with +Inf, as Prometheus lists buckets."""
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


@dataclass
class Metrics:
    """Counters of one server process's rooms and streams."""

    turns_completed: int = 0
    turns_failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    stream_clients: int = 0  # subscriptions open now (SSE and WebSocket)
    stream_clients_cut: int = 0  # subscribers cut for falling behind
    first_token_seconds: Histogram = field(default_factory=Histogram)  # turn_started to first delta
    turn_seconds: Histogram = field(default_factory=Histogram)  # turn_started to turn_completed


class MetricsCollector(Collector):
    """Prometheus families from `Metrics`, read at scrape time; `running` counts the rooms running now."""

    def __init__(self, metrics: Metrics, *, running: Callable[[], int]) -> None:
        self.metrics = metrics
        self.running = running

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        m = self.metrics
        yield GaugeMetricFamily("moot_rooms_running", "Rooms running in this process.", value=self.running())
        yield GaugeMetricFamily(
            "moot_stream_clients", "SSE and WebSocket clients connected.", value=m.stream_clients
        )
        yield CounterMetricFamily(
            "moot_stream_clients_cut", "Clients cut for falling behind.", value=m.stream_clients_cut
        )
        turns = CounterMetricFamily("moot_turns", "Turns ended, by outcome.", labels=["outcome"])
        turns.add_metric(["completed"], m.turns_completed)
        turns.add_metric(["failed"], m.turns_failed)
        yield turns
        tokens = CounterMetricFamily("moot_tokens", "Tokens as the providers reported them.", labels=["kind"])
        tokens.add_metric(["input"], m.input_tokens)
        tokens.add_metric(["output"], m.output_tokens)
        yield tokens
        yield CounterMetricFamily(
            "moot_cost_usd", "What the turns cost, in US dollars, by the models' prices.", value=m.cost_usd
        )
        for name, text, histogram in (
            (
                "moot_model_first_token_seconds",
                "From turn_started to its first delta.",
                m.first_token_seconds,
            ),
            ("moot_model_turn_seconds", "From turn_started to turn_completed.", m.turn_seconds),
        ):
            family = HistogramMetricFamily(name, text)
            family.add_metric([], histogram.cumulative(), sum_value=histogram.total)
            yield family
