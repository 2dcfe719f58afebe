"""A local OpenAI-compatible /v1/chat/completions server for the tests.

Each request takes the next behaviour from a script (then the default): a valid answer,
invalid JSON, an answer outside the taxonomy, an answer cut off at max_tokens, a response
body cut off mid-JSON, 429 with Retry-After, 500, 400, or a hang. Every request body is recorded
so tests can check what the model was sent; a hanging request the client gives up on is
counted (the server cancels its handler when the connection closes).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support import free_port

Answer = Callable[[dict[str, Any]], dict[str, Any]]


def answer(category: str = "road_defect", severity: int = 3, **extra: Any) -> str:
    body = {
        "category": category,
        "severity": severity,
        "confidence": 0.9,
        "summary": "A pothole on a road.",
        "hazards": [],
        "language": "en",
    }
    body.update(extra)
    return json.dumps(body)


@dataclass
class FakeLLM:
    script: list[str] = field(default_factory=list)
    default: str = "valid"
    content: str = field(default_factory=answer)
    requests: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    base_url: str = ""
    delay: float = 0.0
    # A delay per request, from its body (say, by the report's text): answers finish out of
    # the order they were asked in.
    delay_for: Callable[[dict[str, Any]], float] | None = None
    in_flight: int = 0
    peak: int = 0
    # Hanging requests whose client closed the connection (it stopped waiting).
    abandoned: int = 0

    def behaviour(self) -> str:
        return self.script.pop(0) if self.script else self.default

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.delay_for is not None:
                await asyncio.sleep(self.delay_for(await request.json()))
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.times.append(asyncio.get_running_loop().time())
        mode = self.behaviour()
        if mode == "429":
            return web.json_response(
                {"error": "slow down"}, status=429, headers={"Retry-After": "1"}
            )
        if mode == "500":
            return web.json_response({"error": "boom"}, status=500)
        if mode == "400":
            return web.json_response({"error": "bad request"}, status=400)
        if mode == "hang":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.abandoned += 1
                raise
        content = {
            "valid": self.content,
            "invalid_json": "{category: pothole",
            "bad_category": answer(category="spaceships"),
            "chatty": f"Sure! Here it is:\n```json\n{self.content}\n```",
            "cut_off": self.content[: len(self.content) // 2],
            "truncated": self.content,
        }[mode]
        completion: dict[str, Any] = {
            "id": "cmpl-1",
            "object": "chat.completion",
            "model": "fake-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "length" if mode == "cut_off" else "stop",
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }
        if mode == "truncated":
            # The body ends mid-JSON (a proxy or a dying server cut it): status 200, a
            # Content-Length that matches, and no chat completion in it.
            whole = json.dumps(completion)
            return web.Response(text=whole[: len(whole) // 2], content_type="application/json")
        return web.json_response(completion)


@asynccontextmanager
async def running_fake_llm(**kwargs: Any) -> AsyncIterator[FakeLLM]:
    fake = FakeLLM(**kwargs)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    # handler_cancellation: a hanging handler is cancelled when its client hangs up, so
    # `abandoned` shows that the client really closed the request.
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=0.1, handler_cancellation=True
    )
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    fake.base_url = f"http://127.0.0.1:{port}/v1"
    try:
        yield fake
    finally:
        await runner.cleanup()
