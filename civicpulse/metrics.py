"""Prometheus metrics, one registry per app instance (tests run many apps in one process)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# The *_created series double the exposition for no use here.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class Metrics:
    """Every metric the service exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "civicpulse_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "civicpulse_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "civicpulse_queue_depth", "Items waiting in a pipeline queue", ["queue"], registry=r
        )
        self.backlog = Gauge(
            "civicpulse_pipeline_backlog",
            "Reports received but not yet grouped (all tenants), as last counted",
            registry=r,
        )
        self.backlog_wait = Gauge(
            "civicpulse_pipeline_backlog_wait_seconds",
            "How long the oldest report waiting for the pipeline has waited, as last counted",
            registry=r,
        )
        self.streams_open = Gauge(
            "civicpulse_streams_open", "Live streams open in this process", registry=r
        )
        self.stream_table_reads = Counter(
            "civicpulse_stream_table_reads_total",
            "Reads from the table by streams behind their feed (resumes, slow clients)",
            registry=r,
        )
        self.replica_lag = Gauge(
            "civicpulse_read_replica_lag_seconds",
            "How far the read replica is behind the primary, at most (NaN: unknown or none)",
            registry=r,
        )
        self.replica_lag.set(float("nan"))
        self.reads = Counter(
            "civicpulse_reads_total",
            "Reads of the read-only surfaces, by the database that served them",
            ["surface", "database"],
            registry=r,
        )
        self.pipeline_share = Gauge(
            "civicpulse_pipeline_share",
            "The pipeline's share of the process, adapted to intake latency (0-1)",
            registry=r,
        )
        self.batch_size = Histogram(
            "civicpulse_writer_batch_rows",
            "Rows per writer flush",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.flush_latency = Histogram(
            "civicpulse_writer_flush_seconds",
            "Writer flush latency (one transaction)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rows_written = Counter(
            "civicpulse_reports_written_total", "Reports committed by the writer", registry=r
        )
        self.flush_failures = Counter(
            "civicpulse_writer_flush_failures_total", "Writer flushes that failed", registry=r
        )
        self.rejected_overload = Counter(
            "civicpulse_ingest_overload_total",
            "Requests refused with 503 (queue full)",
            registry=r,
        )
        self.stage_items = Counter(
            "civicpulse_stage_items_total",
            "Items a pipeline stage finished",
            ["stage"],
            registry=r,
        )
        self.stage_failures = Counter(
            "civicpulse_stage_failures_total",
            "Pipeline stage batch failures",
            ["stage"],
            registry=r,
        )
        self.reports_failed = Counter(
            "civicpulse_reports_failed_total",
            "Reports set aside as failed after their last attempt, by stage",
            ["stage"],
            registry=r,
        )
        self.stage_latency = Histogram(
            "civicpulse_stage_batch_seconds",
            "Pipeline stage batch latency",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

        self.llm_calls = Counter(
            "civicpulse_llm_calls_total", "LLM HTTP attempts by outcome", ["outcome"], registry=r
        )
        self.llm_failures = Counter(
            "civicpulse_llm_failures_total", "LLM calls that gave up", ["outcome"], registry=r
        )
        self.llm_latency = Histogram(
            "civicpulse_llm_latency_seconds",
            "LLM answer latency",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.llm_tokens = Counter(
            "civicpulse_llm_tokens_total", "LLM tokens used", ["kind"], registry=r
        )
        self.llm_breaker = Gauge(
            "civicpulse_llm_breaker_state", "0 closed, 1 half-open, 2 open", registry=r
        )
        self.classified = Counter(
            "civicpulse_reports_classified_total",
            "Reports classified, by decider",
            ["decided_by"],
            registry=r,
        )
        self.llm_invalid = Counter(
            "civicpulse_llm_invalid_answers_total",
            "LLM answers that failed validation",
            registry=r,
        )

        self.grouped = Counter(
            "civicpulse_reports_grouped_total",
            "Reports grouped: opened an issue or attached",
            ["outcome"],
            registry=r,
        )
        self.sla_events = Counter(
            "civicpulse_sla_events_total",
            "SLA warnings and breaches fired, by target and kind",
            ["target", "kind"],
            registry=r,
        )
        self.sla_lag = Histogram(
            "civicpulse_sla_fire_lag_seconds",
            "How late an SLA timer fired after its due time",
            buckets=(0.1, 0.5, 1, 2, 5, 30, 300, 3600),
            registry=r,
        )

    def set_replica_lag(self, lag: float | None) -> None:
        self.replica_lag.set(float("nan") if lag is None else lag)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
