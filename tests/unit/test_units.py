"""Pure pieces: settings, SQL loading, ids, error mapping, rule classification."""

from __future__ import annotations

import uuid
from pathlib import Path

import msgspec
import pytest

from civicpulse.api.errors import HTTPError, decode_error
from civicpulse.config import Secret, Settings
from civicpulse.db import migrate, queries
from civicpulse.domain.reports import ReportIn
from civicpulse.engine import rules
from civicpulse.errors import ConfigError, ValidationFailed
from civicpulse.ids import uuid7


def test_settings_from_env_converts_and_refuses_unknown_names() -> None:
    s = Settings.from_env(
        {
            "CIVICPULSE_PORT": "9000",
            "CIVICPULSE_PIPELINE_ENABLED": "no",
            "CIVICPULSE_DATABASE_URL": "postgresql://u:pw@h/db",
            "CIVICPULSE_SCHEMA_DIR": "/x",
            "OTHER": "ignored",
        }
    )
    assert (s.port, s.pipeline_enabled, s.schema_dir) == (9000, False, Path("/x"))
    assert isinstance(s.database_url, Secret)
    assert "pw" not in repr(s)
    with pytest.raises(ConfigError, match="CIVICPULSE_PROT"):
        Settings.from_env({"CIVICPULSE_PROT": "1"})
    with pytest.raises(ConfigError, match="as int"):
        Settings.from_env({"CIVICPULSE_PORT": "eighty"})


def test_named_queries_parse_and_every_repository_query_exists() -> None:
    parsed = queries.parse("-- name: a\nSELECT 1\n\n-- name: b\nSELECT $1\n")
    assert parsed == {"a": "SELECT 1", "b": "SELECT $1"}
    with pytest.raises(ValueError, match="twice"):
        queries.parse("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")
    names = queries.all_queries()
    for name in (
        "insert_reports",
        "get_report",
        "claim_reports",
        "finish_classified",
        "import_from_stage",
        "authenticate",
        "create_tenant",
        "list_reports",
    ):
        assert name in names


def test_migrations_are_numbered_without_gaps() -> None:
    found = migrate.load(migrate.schema_dir())
    assert [m.version for m in found] == list(range(1, len(found) + 1))


def test_uuid7_is_time_ordered_and_valid() -> None:
    ids = [uuid7() for _ in range(20_000)]  # thousands share a millisecond
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == 20_000
    # Strictly increasing, within a millisecond too: a batch keeps its order.
    assert ids == sorted(ids)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"lat": 1, "lon": 1}', "text"),
        (b'{"text": "x", "lat": 1, "lon": 1, "z": 1}', "z"),
        (b'{"text": "x", "lat": 99, "lon": 1}', "lat"),
        (b'{"text": "x", "lat": 1, "lon": 1, "reporter": {"phone": "call me"}}', "reporter.phone"),
    ],
)
def test_decode_errors_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(body, type=ReportIn)
    err = decode_error(info.value)
    assert isinstance(err, ValidationFailed)
    assert err.field == field
    assert " - at " not in err.message  # the location moved into `field`


def test_malformed_json_is_a_400() -> None:
    with pytest.raises(msgspec.DecodeError) as info:
        msgspec.json.decode(b"{", type=ReportIn)
    err = decode_error(info.value)
    assert isinstance(err, HTTPError) and err.status == 400


def test_hazards_raise_severity() -> None:
    kinds, severity = rules.hazards_in(rules.normalise("a pothole"))
    assert (kinds, severity) == ((), rules.DEFAULT_SEVERITY)
    kinds, severity = rules.hazards_in(
        rules.normalise("Live wire down and sparking, someone injured")
    )
    assert severity == 5
    assert kinds == ("injury", "live_wire")
    # Whole phrases only: "gaslight" is not "gas".
    assert rules.hazards_in(rules.normalise("gaslight district"))[0] == ()


def test_the_pipeline_share_halves_while_intake_is_slow_and_grows_back() -> None:
    from civicpulse.pipeline.pressure import Share

    now = [0.0]
    share = Share(
        target=0.02, limit=0.1, max_delay=1.0, floor=0.1, window=0.5, clock=lambda: now[0]
    )

    def window(latencies: list[float]) -> None:
        for latency in latencies:
            share.observe(latency)
        now[0] += 0.5

    window([0.005] * 100)
    assert share.rest_after(1.0) == 0.0  # intake fast: the pipeline has the whole process
    window([0.005] * 98 + [0.05] * 2)  # 2% over the target: halve
    assert share.rest_after(0.1) == 0.1 and share.value == 0.5  # rest as long as it worked
    window([0.05] * 10)
    share.observe(0.0)
    assert share.value == 0.25 and share.rest_after(1.0) == 3.0  # work 1 s, rest 3 s
    for _ in range(10):
        window([0.05])
    share.observe(0.0)
    assert share.value == 0.1  # never below the floor: the pipeline always progresses
    window([0.005] * 99 + [0.05])  # 1% is within a p99 target
    share.observe(0.0)
    assert abs(share.value - 0.2) < 1e-9  # grows back a tenth a window
    # The pipeline falls behind: its share doubles while intake stays under the hard limit...
    share.oldest_wait = 5.0
    window([0.05] * 10)
    share.observe(0.0)
    assert abs(share.value - 0.4) < 1e-9
    # ...and halves again past it (the backlog's bound then slows intake's clients down).
    window([0.5] * 10)
    share.observe(0.0)
    assert abs(share.value - 0.2) < 1e-9


def test_the_backlog_bound_and_alert() -> None:
    from civicpulse.pipeline.pressure import Backlog

    backlog = Backlog(limit=100, alert=50)
    assert not backlog.full and not backlog.alerting
    backlog.reports = 60
    assert backlog.alerting and not backlog.full
    backlog.reports = 100
    assert backlog.full
    assert not Backlog(limit=0, alert=0, reports=10**9).full  # 0: no bound
