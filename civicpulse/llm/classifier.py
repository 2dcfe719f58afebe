"""Classification by a language model: prompt building, answer validation, one repair.

The prompt is a versioned file; reporter contact details never reach it (only the text, the
address and the reporter's own category choice). Every answer is decoded with msgspec into
`Answer` and then checked against the tenant's taxonomy; an invalid answer gets one repair
attempt, after which the caller falls back to the local classifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Annotated

import msgspec
from msgspec import Meta

from civicpulse.engine.rules import HAZARD_SEVERITY
from civicpulse.llm.client import ChatClient, ChatResult

PROMPT_VERSION = "classify_v1"
HAZARDS = tuple(sorted({kind for kind, _ in HAZARD_SEVERITY.values()}))
DEFAULT_SEVERITY_SCALE = {
    1: "cosmetic or minor inconvenience (faded paint, litter in a bin)",
    2: "needs fixing soon, no danger (graffiti, a broken bench, a pothole on a quiet street)",
    3: "affects many people or could cause damage (leak, blocked lane, streetlight out on a "
    "busy road)",
    4: "likely to cause injury or serious damage soon (deep pothole on a main road, flooding "
    "across a road, fallen tree blocking traffic)",
    5: "danger to people now (gas smell, live or downed wires, fire, a person injured)",
}


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    category: Annotated[str, Meta(min_length=1, max_length=64)]
    severity: Annotated[int, Meta(ge=1, le=5)]
    confidence: Annotated[float, Meta(ge=0.0, le=1.0)]
    summary: Annotated[str, Meta(min_length=1, max_length=400)]
    hazards: list[str] = []
    # Informational only: a long or odd language name is cut, not a reason to refuse.
    language: Annotated[str, Meta(min_length=1, max_length=40)] = "und"


class InvalidAnswer(ValueError):
    """The model answered, but not with something we can use."""

    def __init__(self, problem: str, content: str) -> None:
        super().__init__(problem)
        self.content = content  # what the model said, for the repair turn


def answer_schema(categories: list[str]) -> dict[str, object]:
    """The JSON schema sent to servers that constrain output with one."""
    return {
        "type": "object",
        "properties": {
            "category": {"type": "string", "enum": categories},
            "severity": {"type": "integer", "minimum": 1, "maximum": 5},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "summary": {"type": "string"},
            "hazards": {"type": "array", "items": {"type": "string", "enum": list(HAZARDS)}},
            "language": {"type": "string"},
        },
        "required": ["category", "severity", "confidence", "summary", "hazards", "language"],
        "additionalProperties": False,
    }


@cache
def prompt_template(version: str = PROMPT_VERSION) -> str:
    return resources.files("civicpulse.llm").joinpath("prompts", f"{version}.md").read_text()


@dataclass(frozen=True, slots=True)
class TenantPrompt:
    """What the model needs to know about one tenant."""

    tenant_name: str
    categories: dict[str, str]  # code -> "name: description"
    severity_scale: dict[int, str]

    def system(self) -> str:
        return prompt_template().format(
            tenant_name=self.tenant_name,
            categories="\n".join(f"- {code}: {text}" for code, text in self.categories.items()),
            severity_scale="\n".join(f"{k}: {v}" for k, v in sorted(self.severity_scale.items())),
            hazards=", ".join(HAZARDS),
        )


def user_message(text: str, address: str | None, requested: str | None) -> str:
    """The report as the model sees it: no reporter name, email or phone, ever."""
    parts = [f"Report: {text}"]
    if address:
        parts.append(f"Address: {address}")
    if requested:
        parts.append(f"The reporter chose the category: {requested}")
    return "\n".join(parts)


_answer = msgspec.json.Decoder(Answer)


def validate(content: str, categories: dict[str, str]) -> Answer:
    """Decode and check an answer against the tenant's taxonomy; raises InvalidAnswer."""
    try:
        answer = _answer.decode(content)
    except msgspec.DecodeError as exc:
        raise InvalidAnswer(str(exc), content) from None
    if answer.category not in categories:
        raise InvalidAnswer(f"category {answer.category!r} is not one of the listed codes", content)
    unknown = [h for h in answer.hazards if h not in HAZARDS]
    if unknown:
        raise InvalidAnswer(f"unknown hazards {unknown}; allowed: {', '.join(HAZARDS)}", content)
    return answer


@dataclass(frozen=True, slots=True)
class LLMOutcome:
    answer: Answer
    result: ChatResult
    repaired: bool


async def classify(
    client: ChatClient,
    prompt: TenantPrompt,
    text: str,
    address: str | None,
    requested: str | None,
    *,
    deadline: float | None = None,
) -> LLMOutcome:
    """Ask, validate, repair once. Raises InvalidAnswer or LLMError."""
    # Validation runs inside the client's call, so its breaker counts an unusable answer as
    # the model failing.
    messages = [
        {"role": "system", "content": prompt.system()},
        {"role": "user", "content": user_message(text, address, requested)},
    ]
    schema = answer_schema(list(prompt.categories))

    def check(content: str) -> Answer:
        return validate(content, prompt.categories)

    try:
        result, answer = await client.ask(
            messages, schema, "report_classification", check, deadline=deadline
        )
        return LLMOutcome(answer, result, False)
    except InvalidAnswer as problem:
        client.metrics.llm_invalid.inc()
        messages += [
            {"role": "assistant", "content": problem.content},
            {
                "role": "user",
                "content": f"That answer is invalid: {problem}. Reply again with "
                "only the corrected JSON object.",
            },
        ]
    try:
        repaired, answer = await client.ask(
            messages, schema, "report_classification", check, deadline=deadline
        )
    except InvalidAnswer:
        client.metrics.llm_invalid.inc()
        raise
    return LLMOutcome(answer, repaired, True)
