"""domain.limits alone: what can be stored, and the path named when something cannot."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from civicpulse.domain import limits
from civicpulse.domain.reports import ReportIn

decode = msgspec.json.Decoder(ReportIn).decode
H = b'{"text": "a", "lat": 1, "lon": 1, '


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (b'{"text": "a\\u0000", "lat": 1, "lon": 1}', "text", "NUL"),
        (H + b'"reporter": {"name": "\\u0000"}}', "reporter.name", "NUL"),
        (H + b'"attributes": {"a": [1, {"b\\u0000": 2}]}}', "attributes.a[1].b?", "NUL"),
        (H + b'"attributes": {"n": 99999999999999999999}}', "attributes.n", "integer"),
        (H + b'"submitted_at": "2200-01-01T00:00:00Z"}', "submitted_at", "2200"),
        (H + b'"media_urls": ["http://x/\\u0000"]}', "media_urls[0]", "NUL"),
    ],
)
def test_refusals_name_the_field(body: bytes, field: str, message: str) -> None:
    with pytest.raises(limits.Unstorable) as refused:
        limits.check(decode(body), strings=b"\\u" in body)
    assert refused.value.field == field
    assert message in refused.value.message
    # Within a batch, the item's index comes first.
    with pytest.raises(limits.Unstorable) as refused:
        limits.check(decode(body), "[3]", strings=True)
    assert refused.value.field == f"[3].{field}"


def test_storable_values_pass_and_depth_is_bounded() -> None:
    fine = {"a": [1, 2.5, None, True, "x" * 100], "b": {"c": {"d": "é"}}}
    limits.check(fine)
    limits.check({"when": dt.datetime(1900, 1, 1, tzinfo=dt.UTC)})
    deep: dict[str, object] = {"leaf": 1}
    for _ in range(limits.MAX_DEPTH):
        deep = {"a": deep}
    with pytest.raises(limits.Unstorable, match="nested deeper"):
        limits.check(deep)
    with pytest.raises(limits.Unstorable, match="U\\+D800"):
        limits.check(["ok", "\ud800"])
    assert limits.coordinate(1e-300) == 0.0 and limits.coordinate(34.123456789) == 34.1234568
