"""A client for any OpenAI-compatible /v1/chat/completions server, built to fail safely.

Each call: a concurrency slot (semaphore), a per-attempt timeout, retries with exponential
backoff and full jitter on 429, 5xx, timeouts and connection errors (a Retry-After header
sets the minimum wait), and a circuit breaker that, after repeated failed calls, refuses at
once for a cool-down so a dead model server costs nothing. The JSON request form is
configurable because servers disagree: OpenAI's `json_schema`, llama.cpp's `json_object` with
a `schema`, or plain prompting with the JSON extracted from the text.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import structlog

from civicpulse.metrics import Metrics

log = structlog.get_logger(__name__)
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
BACKOFF_BASE = 0.25
BACKOFF_CAP = 8.0
RETRY_AFTER_CAP = 30.0
_json = msgspec.json.Encoder()


class LLMError(Exception):
    """A call that produced no usable answer."""


class LLMUnavailable(LLMError):
    """The server failed or the breaker is open; the caller should fall back."""


@dataclass(frozen=True, slots=True)
class ChatResult:
    content: str
    model: str
    latency: float
    prompt_tokens: int
    completion_tokens: int


class CircuitBreaker:
    """Closed -> open after `failures` consecutive failed calls -> half-open after
    `cooldown` (one trial call) -> closed on success, open again on failure."""

    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self.clock = clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self.trial_running = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - self.opened_at >= self.cooldown else "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.trial_running:
            self.trial_running = True
            return True
        return False

    def success(self) -> None:
        self.consecutive = 0
        self.opened_at = None
        self.trial_running = False

    def failure(self) -> None:
        self.consecutive += 1
        self.trial_running = False
        if self.opened_at is not None or self.consecutive >= self.threshold:
            self.opened_at = self.clock()


def extract_json(text: str) -> str:
    """The outermost JSON object in free text (code fences and chatter around it)."""
    fenced = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", text, re.DOTALL)
    if fenced:
        return fenced.group(1)
    start, end = text.find("{"), text.rfind("}")
    return text[start : end + 1] if 0 <= start < end else text


class ChatClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        model: str,
        api_key: str | None,
        json_mode: str,
        timeout: float,
        max_concurrency: int,
        max_retries: int,
        breaker: CircuitBreaker,
        max_tokens: int = 300,
        metrics: Metrics,
        rng: random.Random | None = None,
    ) -> None:
        self.session = session
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.json_mode = json_mode
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.slots = asyncio.Semaphore(max_concurrency)
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.breaker = breaker
        self.metrics = metrics
        self.rng = rng or random.Random()

    def request_body(
        self, messages: list[dict[str, str]], schema: dict[str, Any], name: str
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        if self.json_mode == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": True},
            }
        elif self.json_mode == "json_object":
            body["response_format"] = {"type": "json_object", "schema": schema}
        return body

    async def complete_json(
        self, messages: list[dict[str, str]], schema: dict[str, Any], name: str
    ) -> ChatResult:
        """One answer whose content should be a JSON object; raises LLMUnavailable."""
        if not self.breaker.allow():
            self.metrics.llm_calls.labels("breaker_open").inc()
            raise LLMUnavailable("circuit breaker is open")
        self.metrics.llm_breaker.set({"closed": 0, "half_open": 1, "open": 2}[self.breaker.state])
        payload = _json.encode(self.request_body(messages, schema, name))
        last_error = "no attempt"
        for attempt in range(self.max_retries + 1):
            wait: float | None = None
            started = time.perf_counter()
            try:
                async with (
                    self.slots,
                    self.session.post(
                        self.url, data=payload, headers=self.headers, timeout=self.timeout
                    ) as response,
                ):
                    raw = await response.read()
                    if response.status == 200:
                        result = self._parse(raw, time.perf_counter() - started)
                        self.breaker.success()
                        self.metrics.llm_calls.labels("ok").inc()
                        return result
                    last_error = f"HTTP {response.status}"
                    if response.status not in RETRY_STATUSES:
                        self._failed("rejected")
                        raise LLMUnavailable(
                            f"model server refused the request: {last_error}: {raw[:200]!r}"
                        )
                    wait = _retry_after(response.headers.get("Retry-After"))
                    self.metrics.llm_calls.labels(f"http_{response.status}").inc()
            except TimeoutError:
                last_error = "timeout"
                self.metrics.llm_calls.labels("timeout").inc()
            except aiohttp.ClientError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                self.metrics.llm_calls.labels("connection_error").inc()
            if attempt < self.max_retries:
                backoff = self.rng.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
                delay = max(backoff, wait or 0.0)
                log.info(
                    "llm_retrying", attempt=attempt + 1, error=last_error, delay=round(delay, 3)
                )
                await asyncio.sleep(delay)
        self._failed("exhausted")
        raise LLMUnavailable(
            f"model server failed after {self.max_retries + 1} attempts: {last_error}"
        )

    def _failed(self, outcome: str) -> None:
        self.breaker.failure()
        self.metrics.llm_failures.labels(outcome).inc()
        self.metrics.llm_breaker.set({"closed": 0, "half_open": 1, "open": 2}[self.breaker.state])

    def _parse(self, raw: bytes, latency: float) -> ChatResult:
        try:
            body = msgspec.json.decode(raw)
            content = body["choices"][0]["message"]["content"] or ""
            usage = body.get("usage") or {}
        except (msgspec.DecodeError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"not a chat completion: {raw[:200]!r}") from exc
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        self.metrics.llm_latency.observe(latency)
        self.metrics.llm_tokens.labels("prompt").inc(prompt_tokens)
        self.metrics.llm_tokens.labels("completion").inc(completion_tokens)
        if self.json_mode == "prompt":
            content = extract_json(content)
        return ChatResult(
            content, str(body.get("model") or self.model), latency, prompt_tokens, completion_tokens
        )


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form), capped."""
    if value is None:
        return None
    try:
        return min(RETRY_AFTER_CAP, max(0.0, float(value)))
    except ValueError:
        return None
