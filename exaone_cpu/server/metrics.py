"""GET /metrics: the server's counters in Prometheus' text exposition format (version 0.0.4).

Counters only grow (rates come from Prometheus' rate()); gauges are read when scraped. Everything is
read from the engine and the request counters without stopping the engine thread.
"""

from __future__ import annotations

import collections
import math
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import BatchEngine

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# time to first token, seconds: CPU prefill of a few to thousands of tokens
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self.counts[i] += 1
            self.sum += value
            self.count += 1

    def snapshot(self) -> tuple[list[int], float, int]:
        """(cumulative bucket counts, sum, count), read together."""
        with self._lock:
            return list(self.counts), self.sum, self.count


class RequestCounters:
    """HTTP responses by route and status, and the request-level histograms."""

    def __init__(self, routes: tuple[str, ...]):
        self.routes = routes
        self.responses: collections.Counter[tuple[str, int]] = collections.Counter()
        self.time_to_first_token = Histogram(TTFT_BUCKETS)
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self._lock = threading.Lock()

    def response(self, path: str, status: int) -> None:
        route = path if path in self.routes else "other"  # bounded label values
        with self._lock:
            self.responses[(route, status)] += 1

    def finished(self, prompt_tokens: int, cached_tokens: int, ttft: float | None) -> None:
        with self._lock:
            self.prompt_tokens += prompt_tokens
            self.cached_tokens += cached_tokens
        if ttft is not None:
            self.time_to_first_token.observe(ttft)

    def snapshot(self) -> tuple[list[tuple[tuple[str, int], int]], int, int]:
        """(responses by (route, status), prompt tokens, cached tokens), read together."""
        with self._lock:
            return sorted(self.responses.items()), self.prompt_tokens, self.cached_tokens


def _line(name: str, value: float, labels: dict[str, Any] | None = None) -> str:
    if labels:
        inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
        name = f"{name}{{{inner}}}"
    return f"{name} {_number(value)}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(engine: BatchEngine, requests: RequestCounters, model_name: str) -> str:
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[float, dict[str, Any] | None]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(_line(name, value, labels) for value, labels in samples)

    model = {"model": model_name}
    responses, prompt_tokens, cached_tokens = requests.snapshot()
    metric("exaone_http_responses_total", "counter", "HTTP responses by route and status code.",
           [(n, {"route": route, "status": status}) for (route, status), n in responses])
    active, waiting = engine.load
    metric("exaone_requests_running", "gauge", "Sequences in the engine's batch.", [(active, model)])
    metric("exaone_requests_waiting", "gauge", "Requests waiting for a slot.", [(waiting, model)])
    metric("exaone_prompt_tokens_total", "counter", "Prompt tokens of finished requests.", [(prompt_tokens, model)])
    metric("exaone_prompt_tokens_cached_total", "counter",
           "Prompt tokens of finished requests taken from the prefix cache.", [(cached_tokens, model)])
    metric("exaone_prompt_tokens_computed_total", "counter", "Prompt tokens fed through the model.",
           [(engine.prompt_tokens_computed, model)])
    metric("exaone_generation_tokens_total", "counter", "Tokens generated.", [(engine.tokens_generated, model)])
    metric("exaone_engine_steps_total", "counter", "Batched forward steps.", [(engine.steps, model)])
    metric("exaone_speculative_draft_tokens_total", "counter", "Guessed tokens checked (speculative decoding).",
           [(engine.draft_tokens, model)])
    metric("exaone_speculative_accepted_tokens_total", "counter", "Guessed tokens kept (speculative decoding).",
           [(engine.accepted_draft_tokens, model)])
    metric("exaone_engine_busy_seconds_total", "counter", "Seconds spent in forward steps.",
           [(engine.busy_seconds, model)])
    decode = engine.decode_step_seconds
    metric("exaone_decode_step_seconds", "gauge", "Running average of a step that feeds no prompt tokens.",
           [(decode if decode is not None else math.nan, model)])
    per_token = engine.prompt_token_seconds
    metric("exaone_prefill_tokens_per_second", "gauge",
           "Prompt tokens a second a step adds (running average of the measured cost per prompt token).",
           [(1.0 / per_token if per_token else math.nan, model)])
    cache = engine.prefix_cache
    metric("exaone_prefix_cache_lookups_total", "counter", "Prefix cache lookups (one per request).",
           [(cache.lookups, model)])
    metric("exaone_prefix_cache_hits_total", "counter", "Lookups that reused at least one token.",
           [(cache.hits, model)])
    metric("exaone_prefix_cache_entries", "gauge", "Finished requests' KV caches kept.", [(len(cache), model)])
    metric("exaone_prefix_cache_bytes", "gauge", "Bytes the prefix cache holds.", [(cache.nbytes, model)])
    metric("exaone_prefix_cache_budget_bytes", "gauge", "The prefix cache's budget (--cache-mb).",
           [(cache.budget_bytes, model)])
    metric("exaone_kv_cache_bytes", "gauge", "Bytes of the running sequences' KV caches.",
           [(engine.kv_bytes(), model)])
    h = requests.time_to_first_token
    counts, total, count = h.snapshot()
    out.append("# HELP exaone_time_to_first_token_seconds Time from a request's arrival to its first token.")
    out.append("# TYPE exaone_time_to_first_token_seconds histogram")
    for bound, n in zip(h.buckets, counts):
        out.append(_line("exaone_time_to_first_token_seconds_bucket", n, {**model, "le": _number(float(bound))}))
    out.append(_line("exaone_time_to_first_token_seconds_bucket", count, {**model, "le": "+Inf"}))
    out.append(_line("exaone_time_to_first_token_seconds_sum", total, model))
    out.append(_line("exaone_time_to_first_token_seconds_count", count, model))
    return "\n".join(out) + "\n"
