"""The LLM client against a local OpenAI-compatible server: every failure mode."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from civicpulse.llm import classifier as llm_classifier
from civicpulse.llm.client import ChatClient, CircuitBreaker, LLMError, LLMUnavailable
from civicpulse.metrics import Metrics
from tests.fake_llm import FakeLLM, running_fake_llm

CATEGORIES = {"road_defect": "Road defect: potholes", "streetlight": "Streetlight: lights out"}
PROMPT = llm_classifier.TenantPrompt(
    "Springfield", CATEGORIES, llm_classifier.DEFAULT_SEVERITY_SCALE
)


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with running_fake_llm() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make_client(
    fake: FakeLLM,
    session: aiohttp.ClientSession,
    *,
    mode: str = "json_schema",
    timeout: float = 2.0,
    retries: int = 2,
    breaker: CircuitBreaker | None = None,
) -> ChatClient:
    return ChatClient(
        session,
        base_url=fake.base_url,
        model="m",
        api_key="secret",
        json_mode=mode,
        timeout=timeout,
        max_concurrency=2,
        max_retries=retries,
        breaker=breaker or CircuitBreaker(3, 60),
        metrics=Metrics(),
        rng=random.Random(7),
    )


async def test_valid_answer_is_validated_and_request_forms_differ(
    fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    for mode in ("json_schema", "json_object", "prompt"):
        outcome = await llm_classifier.classify(
            make_client(fake, session, mode=mode), PROMPT, "Pothole on Elm", "1 Elm St", None
        )
        assert outcome.answer.category == "road_defect"
        assert outcome.repaired is False
    schema_form, object_form, prompt_form = fake.requests
    assert schema_form["response_format"]["type"] == "json_schema"
    assert schema_form["response_format"]["json_schema"]["schema"]["properties"]["category"][
        "enum"
    ] == list(CATEGORIES)
    assert object_form["response_format"]["type"] == "json_object"
    assert "schema" in object_form["response_format"]
    assert "response_format" not in prompt_form
    assert all(r["max_tokens"] == 300 for r in fake.requests)


async def test_chatty_answer_is_extracted_in_prompt_mode(
    fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    fake.script = ["chatty"]
    outcome = await llm_classifier.classify(
        make_client(fake, session, mode="prompt"), PROMPT, "Pothole", None, None
    )
    assert outcome.answer.severity == 3


async def test_invalid_json_gets_one_repair(fake: FakeLLM, session: aiohttp.ClientSession) -> None:
    fake.script = ["invalid_json", "valid"]
    outcome = await llm_classifier.classify(make_client(fake, session), PROMPT, "x", None, None)
    assert outcome.repaired is True
    repair = fake.requests[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": "{category: pothole"}
    assert "invalid" in repair[-1]["content"]


async def test_answer_outside_the_taxonomy_twice_is_refused(
    fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    fake.script = ["bad_category", "bad_category"]
    with pytest.raises(llm_classifier.InvalidAnswer, match="spaceships"):
        await llm_classifier.classify(make_client(fake, session), PROMPT, "x", None, None)
    assert len(fake.requests) == 2


async def test_429_is_retried_after_the_retry_after_delay(
    fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    fake.script = ["429"]
    started = time.monotonic()
    outcome = await llm_classifier.classify(make_client(fake, session), PROMPT, "x", None, None)
    assert outcome.answer.category == "road_defect"
    assert len(fake.requests) == 2
    assert fake.times[1] - fake.times[0] >= 0.95  # Retry-After: 1
    assert time.monotonic() - started < 5


async def test_persistent_500_gives_up_after_retries(
    fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    fake.default = "500"
    client = make_client(fake, session, retries=2)
    with pytest.raises(LLMUnavailable, match="HTTP 500"):
        await client.complete_json([{"role": "user", "content": "x"}], {}, "n")
    assert len(fake.requests) == 3
    # Backoff grows between attempts (full jitter, so compare against the cap only).
    assert fake.times[2] >= fake.times[1] >= fake.times[0]


async def test_a_hanging_server_times_out(fake: FakeLLM, session: aiohttp.ClientSession) -> None:
    fake.default = "hang"
    client = make_client(fake, session, timeout=0.3, retries=1)
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match="timeout"):
        await client.complete_json([{"role": "user", "content": "x"}], {}, "n")
    assert time.monotonic() - started < 2.0
    assert len(fake.requests) == 2


async def test_breaker_opens_then_half_opens_then_closes(
    fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    now = [0.0]
    breaker = CircuitBreaker(2, cooldown=30, clock=lambda: now[0])
    client = make_client(fake, session, retries=0, breaker=breaker)
    fake.default = "500"
    for _ in range(2):
        with pytest.raises(LLMUnavailable):
            await client.complete_json([{"role": "user", "content": "x"}], {}, "n")
    assert breaker.state == "open"
    sent = len(fake.requests)
    with pytest.raises(LLMUnavailable, match="breaker"):
        await client.complete_json([{"role": "user", "content": "x"}], {}, "n")
    assert len(fake.requests) == sent  # refused without calling the server
    now[0] = 31.0
    assert breaker.state == "half_open"
    fake.default = "valid"
    await client.complete_json([{"role": "user", "content": "x"}], {}, "n")
    assert breaker.state == "closed"


class Ledger(CircuitBreaker):
    """A breaker that counts what it admitted and what it was told."""

    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float]) -> None:
        super().__init__(failures, cooldown, clock)
        self.admitted = 0
        self.told = 0

    def allow(self) -> bool:
        ok = super().allow()
        self.admitted += ok
        return ok

    def success(self) -> None:
        self.told += 1
        super().success()

    def failure(self) -> None:
        self.told += 1
        super().failure()


async def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize(
    ("mode", "after"),
    [
        ("valid", "closed"),
        ("truncated", "open"),  # the body ends mid-JSON
        ("cut_off", "open"),  # the answer ends mid-JSON (max_tokens)
        ("invalid_json", "open"),
        ("bad_category", "open"),  # well-formed, but the model did not do its job
        ("500", "open"),
        ("400", "open"),
        ("hang", "open"),  # the per-attempt timeout
    ],
)
async def test_every_end_of_the_half_open_trial_closes_or_reopens_the_breaker(
    fake: FakeLLM, session: aiohttp.ClientSession, mode: str, after: str
) -> None:
    now = [0.0]
    breaker = Ledger(1, cooldown=30, clock=lambda: now[0])
    breaker.failure()
    now[0] = 31.0
    assert breaker.state == "half_open"
    client = make_client(fake, session, timeout=0.3, retries=0, breaker=breaker)
    fake.default = mode
    if after == "closed":
        await llm_classifier.classify(client, PROMPT, "Pothole", None, None)
    else:
        with pytest.raises(LLMError):  # the repair is refused: the breaker is open again
            await llm_classifier.classify(client, PROMPT, "Pothole", None, None)
    assert breaker.state == after
    assert breaker.trial_running is False
    assert breaker.admitted == 1 and breaker.told == 2  # the trial, and the failure above
    # A failed trial sends nothing more (the repair is refused): the model rests again.
    assert len(fake.requests) == 1


async def test_a_truncated_trial_reopens_the_breaker_and_a_good_one_closes_it(
    fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    now = [0.0]
    breaker = CircuitBreaker(2, cooldown=30, clock=lambda: now[0])
    client = make_client(fake, session, retries=0, breaker=breaker)
    fake.default = "500"
    for _ in range(2):
        with pytest.raises(LLMUnavailable):
            await llm_classifier.classify(client, PROMPT, "x", None, None)
    assert breaker.state == "open"
    now[0] = 31.0
    fake.default = "truncated"
    with pytest.raises(LLMError, match="not a chat completion"):
        await llm_classifier.classify(client, PROMPT, "x", None, None)
    assert breaker.state == "open"  # not stuck half-open with its trial "running"
    with pytest.raises(LLMUnavailable, match="breaker"):
        await llm_classifier.classify(client, PROMPT, "x", None, None)
    now[0] = 62.0
    fake.default = "valid"
    outcome = await llm_classifier.classify(client, PROMPT, "x", None, None)
    assert outcome.answer.category == "road_defect"
    assert breaker.state == "closed"


async def test_cancelling_the_trial_or_its_deadline_releases_it(
    fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    now = [0.0]
    breaker = Ledger(1, cooldown=30, clock=lambda: now[0])
    breaker.failure()
    now[0] = 31.0
    client = make_client(fake, session, timeout=60, retries=0, breaker=breaker)
    fake.default = "hang"
    trial = asyncio.create_task(llm_classifier.classify(client, PROMPT, "x", None, None))
    await wait_for(lambda: len(fake.requests) == 1)
    assert breaker.trial_running is True
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert (breaker.state, breaker.trial_running) == ("open", False)
    assert breaker.admitted == 1 and breaker.told == 2
    await wait_for(lambda: fake.abandoned == 1)  # the request was closed, not left hanging
    now[0] = 62.0
    # The pipeline's per-report deadline cuts the next trial the same way.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await llm_classifier.classify(client, PROMPT, "x", None, None)
    assert (breaker.state, breaker.trial_running) == ("open", False)
    assert breaker.admitted == 2 and breaker.told == 3
    await wait_for(lambda: fake.abandoned == 2)
    now[0] = 93.0
    fake.default = "valid"
    await llm_classifier.classify(client, PROMPT, "x", None, None)
    assert breaker.state == "closed"


async def test_calls_cancelled_while_queued_tell_the_breaker_nothing(
    fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    breaker = Ledger(100, cooldown=30, clock=time.monotonic)
    client = make_client(fake, session, timeout=60, breaker=breaker)  # max_concurrency=2
    fake.default = "hang"
    calls = [
        asyncio.create_task(client.complete_json([{"role": "user", "content": "x"}], {}, "n"))
        for _ in range(5)
    ]
    await wait_for(lambda: len(fake.requests) == 2)
    for call in calls:
        call.cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    # Only the two calls that reached the model count against it, once each.
    assert breaker.admitted == breaker.told == breaker.consecutive == 2
    await wait_for(lambda: fake.abandoned == 2)


async def test_a_retry_that_cannot_finish_before_the_deadline_is_not_started(
    fake: FakeLLM, session: aiohttp.ClientSession
) -> None:
    fake.default = "429"  # Retry-After: 1
    client = make_client(fake, session, retries=2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(LLMUnavailable, match="no time for another before the deadline: HTTP 429"):
        await client.complete_json(
            [{"role": "user", "content": "x"}], {}, "n", deadline=started + 0.5
        )
    assert loop.time() - started < 0.5
    assert len(fake.requests) == 1


async def test_concurrency_is_bounded(fake: FakeLLM, session: aiohttp.ClientSession) -> None:
    fake.delay = 0.05
    client = make_client(fake, session)  # max_concurrency=2
    await asyncio.gather(
        *[client.complete_json([{"role": "user", "content": "x"}], {}, "n") for _ in range(8)]
    )
    assert len(fake.requests) == 8
    assert fake.peak == 2


def test_reporter_contact_details_never_reach_the_prompt() -> None:
    message = llm_classifier.user_message("Leak at the corner", "5 Oak St", "water_sewer")
    assert "Leak at the corner" in message and "5 Oak St" in message
    # The signature itself has no place for contact details: only text, address, category.
    assert llm_classifier.user_message.__code__.co_varnames[:3] == ("text", "address", "requested")
