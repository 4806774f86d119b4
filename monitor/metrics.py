"""Prometheus metrics, on a registry that is passed in (a fresh one per test).

Label values come only from the config (stream, target and sink names) or
from fixed sets in the code, never from URLs, model text or error messages,
so that the series count stays bounded and no secret reaches Prometheus.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)

from monitor import __version__

PREFIX = "vlm_monitor"

# "late": the answer's time ran out while the daemon itself could not run (short of CPU).
VLM_OUTCOMES = ("ok", "bad_answer", "timeout", "connection_error", "server_error", "rejected", "late")
# Why a sampling interval gave no verdict: the first three at the source, the others at the model.
DROP_REASONS = ("stale", "stream_down", "no_new_frame", "model_unavailable", "model_error",
                "off_schedule")
VERIFY_RESULTS = ("confirmed", "refused", "error")
DELIVERY_OUTCOMES = ("delivered", "retry", "failed")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # *_created series double the output and no dashboard uses them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Info(f"{PREFIX}_build", "Version of vlm-monitor", registry=r)
        self.build_info.info({"version": __version__})
        self.shard_info = Gauge(
            f"{PREFIX}_shard_info", "1 for this replica's shard: its index, of count replicas",
            ["index", "count"], registry=r)
        self.frames_sampled = Counter(
            f"{PREFIX}_frames_sampled_total", "Frames taken for analysis (analysed, reused, or "
            "dropped by the model)", ["stream"], registry=r)
        self.intervals = Counter(
            f"{PREFIX}_sampling_intervals_total",
            "Sampling intervals elapsed; each ends analysed, reused or dropped (with a reason)",
            ["stream"], registry=r)
        self.frames_analysed = Counter(
            f"{PREFIX}_frames_analysed_total", "Samples the model judged", ["stream"], registry=r)
        self.frames_dropped = Counter(
            f"{PREFIX}_frames_dropped_total", "Sampled frames not analysed, by reason",
            ["stream", "reason"], registry=r)
        self.stream_up = Gauge(
            f"{PREFIX}_stream_up", "1 while the stream delivers frames", ["stream"], registry=r)
        self.verdicts_reused = Counter(
            f"{PREFIX}_verdicts_reused_total",
            "Samples not sent to the model: the scene had not changed since the last analysed one",
            ["stream"], registry=r)
        self.frame_age = Histogram(
            f"{PREFIX}_frame_age_seconds", "Time from a frame's capture to its verdict", ["stream"],
            buckets=(0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60), registry=r)
        self.stream_reconnects = Counter(
            f"{PREFIX}_stream_reconnects_total", "Times the stream was reopened", ["stream"],
            registry=r)
        self.vlm_requests = Counter(
            f"{PREFIX}_vlm_requests_total", "Model requests by outcome", ["outcome"], registry=r)
        self.vlm_duration = Histogram(
            f"{PREFIX}_vlm_request_duration_seconds", "Model request latency, retries included",
            buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60), registry=r)
        self.vlm_inflight = Gauge(
            f"{PREFIX}_vlm_inflight_requests", "Model requests in flight", registry=r)
        self.vlm_tokens = Counter(
            f"{PREFIX}_vlm_tokens_total", "Tokens reported by the model server", ["kind"],
            registry=r)
        self.vlm_up = Gauge(
            f"{PREFIX}_vlm_up", "1 while the model server answers and serves the model",
            registry=r)
        self.endpoint_up = Gauge(
            f"{PREFIX}_endpoint_up", "1 while the endpoint answers and serves its model",
            ["endpoint"], registry=r)
        self.endpoint_requests = Counter(
            f"{PREFIX}_endpoint_requests_total", "Model requests by endpoint and outcome",
            ["endpoint", "outcome"], registry=r)
        self.endpoint_inflight = Gauge(
            f"{PREFIX}_endpoint_inflight_requests", "Requests in flight to the endpoint",
            ["endpoint"], registry=r)
        self.endpoint_limit = Gauge(
            f"{PREFIX}_endpoint_concurrency_limit",
            "The endpoint's bound on requests in flight (moves when it is auto)", ["endpoint"],
            registry=r)
        self.matches = Counter(
            f"{PREFIX}_matches_total", "Samples in which the target was seen", ["stream", "target"],
            registry=r)
        self.alerts = Counter(
            f"{PREFIX}_alerts_total", "Alerts raised", ["stream", "target"], registry=r)
        self.alert_deliveries = Counter(
            f"{PREFIX}_alert_deliveries_total", "Alert delivery attempts by sink and outcome",
            ["sink", "outcome"], registry=r)
        self.alerts_unstored = Gauge(
            f"{PREFIX}_alerts_unstored",
            "Alerts raised but not yet written to the outbox (its disk failed); held and retried",
            registry=r)
        self.alert_store_failures = Counter(
            f"{PREFIX}_alert_store_failures_total",
            "Alerts that could not be written to the outbox when raised", registry=r)
        self.alerts_lost = Counter(
            f"{PREFIX}_alerts_lost_total",
            "Alerts never written to the outbox: too many held, or held at exit", registry=r)
        self.alerts_pending = Gauge(
            f"{PREFIX}_alerts_pending", "Alert deliveries not yet done, by sink", ["sink"],
            registry=r)
        self.alert_oldest_pending = Gauge(
            f"{PREFIX}_alert_oldest_pending_timestamp_seconds",
            "When the oldest alert still pending for the sink was raised (0: none pending)",
            ["sink"], registry=r)
        self.verifications = Counter(
            f"{PREFIX}_verifications", "Second looks before an alert, by result", ["result"],
            registry=r)
        self.verification_seconds = Histogram(
            f"{PREFIX}_verification_duration_seconds", "Model time a second look added",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=r)
        for result in VERIFY_RESULTS:
            self.verifications.labels(result)
        # Set at each start from the judgements stored (see monitor.feedback). A gauge: judging
        # an alert again moves it from one verdict to the other (a counter counted each change).
        self.feedback = Gauge(
            f"{PREFIX}_alerts_judged", "Alerts whose judgement in the console is this verdict "
            "(right, false_alarm)", ["stream", "target", "verdict"], registry=r)

        # Load: is the daemon itself keeping up?
        self.loop_lag = Histogram(
            f"{PREFIX}_event_loop_lag_seconds", "How late the event loop ran a timer: above ~0.1 s "
            "the daemon is short of CPU", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r)
        self.loop_cpu_wait = Counter(
            f"{PREFIX}_event_loop_cpu_wait_seconds", "Time the event loop's thread was ready to run but "
            "waited for a CPU (Linux): a rate near 1 means the machine is short of cores", registry=r)
        self.capture_lag = Histogram(
            f"{PREFIX}_capture_lag_seconds", "How far a live camera's capture ran behind the camera "
            "when a sampled frame was decoded", buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=r)
        self.capture_bytes = Counter(
            f"{PREFIX}_capture_received_bytes", "Video bytes received from a live camera", ["stream"],
            registry=r)
        self.cameras_behind = Gauge(
            f"{PREFIX}_cameras_behind", "Live cameras whose samples went stale or whose capture lagged "
            "in the last 10 s", registry=r)
        self.capture_workers = Gauge(
            f"{PREFIX}_capture_workers", "Capture worker processes running", registry=r)
        self.capture_worker_restarts = Counter(
            f"{PREFIX}_capture_worker_restarts", "Capture workers started again after they died",
            registry=r)
        self.clips = Counter(
            f"{PREFIX}_clips", "Alerts' evidence clips: written, or failed (the alert went out anyway)",
            ["result"], registry=r)
        for result in ("written", "failed"):
            self.clips.labels(result)
        self.clip_bytes = Gauge(f"{PREFIX}_clip_bytes", "Bytes of evidence clips kept on disk", registry=r)

    def declare_stream(self, stream: str, targets: list[str]) -> None:
        """Create a stream's series at zero, so rate() and absent() work from the start."""
        self.frames_sampled.labels(stream)
        self.intervals.labels(stream)
        self.frames_analysed.labels(stream)
        self.verdicts_reused.labels(stream)
        for reason in DROP_REASONS:
            self.frames_dropped.labels(stream, reason)
        self.stream_up.labels(stream).set(0)
        self.stream_reconnects.labels(stream)
        for target in targets:
            self.matches.labels(stream, target)
            self.alerts.labels(stream, target)

    def forget_stream(self, stream: str, targets: list[str], *, whole: bool = True) -> None:
        """Drop the series of these targets of a stream (and, ``whole``, of the stream itself),
        so that dashboards do not show what a reload removed frozen forever."""
        series: list[tuple[Any, tuple[str, ...]]] = [
            (m, (stream, t)) for m in (self.matches, self.alerts) for t in targets]
        if whole:
            series += [(m, (stream,)) for m in (self.frames_sampled, self.intervals,
                                                self.frames_analysed, self.stream_up,
                                                self.stream_reconnects, self.frame_age,
                                                self.verdicts_reused, self.capture_bytes)]
            series += [(self.frames_dropped, (stream, r)) for r in DROP_REASONS]
        for metric, values in series:
            with contextlib.suppress(KeyError):
                metric.remove(*values)

    def declare_sink(self, sink: str) -> None:
        for outcome in DELIVERY_OUTCOMES:
            self.alert_deliveries.labels(sink, outcome)
        self.alerts_pending.labels(sink).set(0)
        self.alert_oldest_pending.labels(sink).set(0)

    def declare_endpoint(self, endpoint: str) -> None:
        for outcome in VLM_OUTCOMES:
            self.endpoint_requests.labels(endpoint, outcome)
        self.endpoint_up.labels(endpoint).set(0)
        self.endpoint_inflight.labels(endpoint).set(0)

    def declare_vlm(self) -> None:
        for outcome in VLM_OUTCOMES:
            self.vlm_requests.labels(outcome)
        for kind in ("prompt", "completion"):
            self.vlm_tokens.labels(kind)
