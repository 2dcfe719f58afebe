"""A client for any OpenAI-compatible /v1/chat/completions server, built to fail safely.

Each call: a concurrency slot (semaphore), a per-attempt timeout, retries with exponential
backoff and full jitter on 429, 5xx, timeouts and connection errors (a Retry-After header
sets the minimum wait), and a circuit breaker that, after repeated failed calls, refuses at
once for a cool-down so a dead model server costs nothing. The JSON request form is
configurable because servers disagree: OpenAI's `json_schema`, llama.cpp's `json_object` with
a `schema`, or plain prompting with the JSON extracted from the text.

The breaker rule: every call it admits ends in exactly one success() or failure(), decided in
one `finally`, whatever way the call ends (an answer, an HTTP error, a timeout, a truncated or
unusable answer, cancellation). A call it never hears the end of would hold the half-open
trial, and the breaker would stay open for good.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

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
T = TypeVar("T")


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
    `cooldown` (one trial call) -> closed on success, open again on failure.

    Every allow() that says yes must be followed by exactly one success() or failure().
    """

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

    def admits(self) -> bool:
        """Whether allow() would say yes now, without taking the trial."""
        state = self.state
        return state == "closed" or (state == "half_open" and not self.trial_running)

    def allow(self) -> bool:
        """Admit a call; the caller then owes exactly one success() or failure()."""
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
        self,
        messages: list[dict[str, str]],
        schema: dict[str, Any],
        name: str,
        *,
        deadline: float | None = None,
    ) -> ChatResult:
        """One answer whose content should be a JSON object (not checked); raises LLMError."""
        result, _ = await self.ask(messages, schema, name, str, deadline=deadline)
        return result

    async def ask(
        self,
        messages: list[dict[str, str]],
        schema: dict[str, Any],
        name: str,
        check: Callable[[str], T],
        *,
        deadline: float | None = None,
    ) -> tuple[ChatResult, T]:
        """One answer and what `check` made of it; raises LLMError or what `check` raises."""
        # `deadline` (event-loop time) only keeps retries that could not finish in time from
        # starting; the caller enforces it by cancelling the call, which is safe.
        if not self.breaker.admits():
            # Refused before queueing for a slot: a dead model server costs nothing.
            self.metrics.llm_calls.labels("breaker_open").inc()
            raise LLMUnavailable("circuit breaker is open")
        payload = _json.encode(self.request_body(messages, schema, name))
        admitted = False
        # What the breaker hears unless the call reaches a known end: an exception nobody
        # foresaw is still the model call failing, never silence (silence in the half-open
        # trial would keep the breaker shut for good).
        failure: str | None = "error"
        try:
            last_error = "no attempt"
            for attempt in range(self.max_retries + 1):
                async with self.slots:
                    if not admitted:
                        # Admitted only once a slot is held: a call given up while queued
                        # (its deadline passed) never reached the model and says nothing
                        # about it, and the half-open trial is never stuck behind a queue.
                        if not self.breaker.allow():
                            self.metrics.llm_calls.labels("breaker_open").inc()
                            raise LLMUnavailable("circuit breaker is open")
                        admitted = True
                        self._show_state()
                    try:
                        outcome = await self._attempt(payload)
                    except LLMUnavailable:
                        failure = "rejected"
                        raise
                    except LLMError:
                        failure = "malformed"
                        raise
                if isinstance(outcome, ChatResult):
                    try:
                        checked = check(outcome.content)
                    except Exception:
                        # A well-formed answer we cannot use is the model failing its job.
                        failure = "invalid"
                        raise
                    failure = None
                    return outcome, checked
                last_error, wait = outcome
                if attempt == self.max_retries:
                    break
                backoff = self.rng.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))
                delay = max(backoff, wait or 0.0)
                if deadline is not None and asyncio.get_running_loop().time() + delay >= deadline:
                    failure = "exhausted"
                    raise LLMUnavailable(
                        f"model server failed after {attempt + 1} attempts, no time for "
                        f"another before the deadline: {last_error}"
                    )
                log.info(
                    "llm_retrying", attempt=attempt + 1, error=last_error, delay=round(delay, 3)
                )
                await asyncio.sleep(delay)
            failure = "exhausted"
            raise LLMUnavailable(
                f"model server failed after {self.max_retries + 1} attempts: {last_error}"
            )
        except asyncio.CancelledError:
            # A deadline or a shutdown: the request is abandoned (aiohttp closes its
            # connection) and the trial slot, if this was the trial, is released.
            failure = "cancelled"
            raise
        finally:
            if admitted:
                self._judge(failure)

    async def _attempt(self, payload: bytes) -> ChatResult | tuple[str, float | None]:
        """One HTTP exchange: the answer, or (error, Retry-After) when it may be retried.

        Raises LLMUnavailable when the server refuses the request, LLMError when the answer
        is not a chat completion (a truncated body, say): neither is worth retrying.
        """
        started = time.perf_counter()
        try:
            async with self.session.post(
                self.url, data=payload, headers=self.headers, timeout=self.timeout
            ) as response:
                raw = await response.read()
        except TimeoutError:
            self.metrics.llm_calls.labels("timeout").inc()
            return "timeout", None
        except aiohttp.ClientError as exc:
            self.metrics.llm_calls.labels("connection_error").inc()
            return f"{type(exc).__name__}: {exc}", None
        if response.status == 200:
            try:
                result = self._parse(raw, time.perf_counter() - started)
            except LLMError:
                self.metrics.llm_calls.labels("malformed").inc()
                raise
            self.metrics.llm_calls.labels("ok").inc()
            return result
        self.metrics.llm_calls.labels(f"http_{response.status}").inc()
        if response.status not in RETRY_STATUSES:
            raise LLMUnavailable(
                f"model server refused the request: HTTP {response.status}: {raw[:200]!r}"
            )
        return f"HTTP {response.status}", _retry_after(response.headers.get("Retry-After"))

    def _judge(self, failure: str | None) -> None:
        """Tell the breaker how a call ended: exactly once per admitted call."""
        if failure is None:
            self.breaker.success()
        else:
            self.breaker.failure()
            self.metrics.llm_failures.labels(failure).inc()
        self._show_state()

    def _show_state(self) -> None:
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
