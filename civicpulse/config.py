"""One frozen Settings object, built once from CIVICPULSE_* environment variables.

Nothing else reads the environment: the Settings are passed explicitly to whatever needs them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from civicpulse.errors import ConfigError


class Secret(str):
    """A string that never shows itself in a repr or a log line."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Runtime configuration; every field maps to CIVICPULSE_<FIELD_NAME_UPPERCASE>."""

    # Unset: `serve` starts an embedded PostgreSQL in data_dir.
    database_url: Secret | None = None
    data_dir: Path = Path(".civicpulse")
    # The role the pool switches to at connect time; RLS applies to it. Empty: no switch.
    db_app_role: str = "civicpulse_app"
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_command_timeout: float = 30.0
    # A streaming replica for the read-only surfaces (dashboard data, analytics, exports,
    # public Open311 reads, stream replay); unset: everything reads the primary. Past
    # read_max_lag_seconds behind (measured every read_lag_check_seconds) or unreachable,
    # those reads go to the primary until it catches up.
    read_database_url: Secret | None = None
    read_max_lag_seconds: float = 5.0
    read_lag_check_seconds: float = 0.5

    host: str = "127.0.0.1"
    port: int = 8000
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"

    # Intake: the bounded queue between HTTP handlers and the batching writer.
    ingest_queue_size: int = 10_000
    ingest_max_batch: int = 1_000
    # Writer tasks draining the intake queue; more overlap commits when the disk is slow.
    ingest_writers: int = 2
    ingest_retry_after: int = 1
    max_body_bytes: int = 64 * 1024
    max_batch_body_bytes: int = 8 * 1024 * 1024
    max_batch_items: int = 1_000

    # Pipeline: claims leased from the database, moved between stages by bounded queues.
    pipeline_enabled: bool = True
    pipeline_claim_batch: int = 200
    pipeline_lease_seconds: float = 60.0
    pipeline_poll_seconds: float = 1.0
    pipeline_queue_size: int = 8
    # Grouping follows submission order: a report still waiting for classification holds back
    # its tenant's later reports for at most this long (then they are grouped without it).
    group_order_wait_seconds: float = 60.0
    # A report whose classification or grouping failed this many times is set aside (state
    # 'failed', with the reason), so it cannot hold its tenant's later reports back for good.
    # Between attempts it waits a backoff: pipeline_retry_backoff seconds, doubling with
    # each attempt, at most pipeline_retry_backoff_max.
    pipeline_max_attempts: int = 5
    pipeline_retry_backoff: float = 1.0
    pipeline_retry_backoff_max: float = 60.0
    process_pool_workers: int = 0  # 0: one per CPU
    # The pool's workers may run at a lower CPU priority (nice), so that when the cores are
    # short intake's request handling and commits come first. 0 (the default): the same
    # priority; at 5 the first classification after start-up (the model is trained in a
    # worker) took over a second beside a busy process.
    process_pool_nice: int = 0
    # Intake first, the pipeline never left behind (pipeline/pressure.py). While more than 1%
    # of intake requests take longer than intake_latency_target_ms, the pipeline's share of
    # the process halves, else it grows back, never below pipeline_min_share (the pipeline
    # always makes progress). Once a report has waited pipeline_max_delay_seconds for the
    # pipeline, the share grows unless intake's p99 passes intake_latency_limit_ms.
    intake_latency_target_ms: float = 20.0
    intake_latency_limit_ms: float = 100.0
    pipeline_max_delay_seconds: float = 0.5
    pipeline_min_share: float = 0.1
    # The backlog (reports not yet grouped) is counted every backlog_check_seconds. Past
    # backlog_limit intake answers 503 with Retry-After; past backlog_alert /readyz warns
    # and civicpulse_pipeline_backlog shows it. 0: no bound, no alert.
    backlog_limit: int = 200_000
    backlog_alert: int = 50_000
    backlog_check_seconds: float = 0.5

    # Classification. No LLM base URL: the local classifier decides everything.
    llm_base_url: str | None = None
    llm_model: str = "default"
    llm_api_key: Secret | None = None
    # json_schema (OpenAI), json_object (llama.cpp: json_object plus a schema), or prompt.
    llm_json_mode: str = "json_schema"
    # One HTTP attempt; retries come on top, all inside llm_deadline_seconds.
    llm_timeout: float = 10.0
    # Per report: once this long has passed since the LLM was asked (hanging, retrying, or
    # queued for a concurrency slot), the local model's answer is taken instead
    # (fallback_reason "deadline"), so a slow or dead model cannot hold reports back.
    llm_deadline_seconds: float = 2.0
    # A cap on each answer: a model that keeps writing inside its JSON must not hold the
    # server (which may serve one request at a time) for everyone behind it.
    llm_max_tokens: int = 300
    llm_max_concurrency: int = 4
    llm_max_retries: int = 2
    llm_breaker_failures: int = 5
    llm_breaker_cooldown: float = 30.0
    # A tenant's local model is retrained once this many new labels have arrived.
    retrain_after_labels: int = 200
    # How often a tenant's label count is checked against its model.
    retrain_check_seconds: float = 60.0

    # SLA timers: how often the scheduler looks for due warnings and breaches, and how many
    # it fires per transaction.
    sla_tick_seconds: float = 1.0
    sla_fire_batch: int = 500

    # Analytics: how often the aggregator refreshes dirty rollup hours (and how many per
    # transaction), and how often it looks for closed days to snapshot.
    aggregate_tick_seconds: float = 1.0
    aggregate_batch_hours: int = 500
    snapshot_check_seconds: float = 60.0
    # The dashboard page's costly widgets (rankings, recurring places) are recomputed at
    # most this often per tenant and view; the analytics API always computes them live.
    dashboard_widget_seconds: float = 60.0
    # Live streams: stream wake-ups per second in a process. Each wake-up writes everything
    # new in one chunk, and a feed's streams are woken in small groups spread over the
    # interval; with more open streams than this, each is woken less often (10,000 streams
    # at 2,000/s: every 5 s), so fan-out cannot starve intake (bench/streams).
    stream_max_wakeups: float = 2_000.0

    # Planner statistics: every this many seconds the tables whose statistics are stale are
    # analysed (never analysed though holding at least analyze_min_rows changed rows, or
    # changed by more than analyze_changed_fraction of their rows). 0: never; the service
    # then relies on the server's autovacuum.
    analyze_check_seconds: float = 30.0
    analyze_changed_fraction: float = 0.2
    analyze_min_rows: int = 1_000

    # Garbage collection: the young generation is collected after this many allocations
    # (Python's default is 700; what start-up made is frozen). 0: the interpreter's default.
    gc_gen0_threshold: int = 50_000
    shutdown_timeout: float = 10.0
    # How long a process trusts a cached key or tenant. Revocations are also announced to
    # every process at once (civicpulse_auth); this bounds them while a listener reconnects.
    auth_cache_seconds: float = 5.0
    # How long a process trusts a cached tenant (its taxonomy, places and rate limits); a
    # change made through this process applies here at once.
    tenant_cache_seconds: float = 30.0
    # How often API keys' last_used_at is written (each key at most once a minute).
    key_usage_flush_seconds: float = 10.0
    # Reports located by address only get coordinates from their tenant's geocoder (if it
    # set one, PUT .../geocoder): how often to look for them, the least time between two
    # requests from this process (Nominatim's usage policy asks for 1 s), and how long one
    # request may take.
    geocode_every_seconds: float = 5.0
    geocode_min_interval_seconds: float = 1.0
    geocode_timeout_seconds: float = 10.0
    # Tenants and keys cached per process (LRU): requests for made-up slugs or keys cannot
    # grow memory past this.
    auth_cache_size: int = 10_000

    # Rate limits (token buckets, per process; a tenant may set its own, PUT .../rate-limits):
    # requests per second and burst per API key, and per client address for the public
    # routes that need no key. 0: no limit.
    rate_limit_key_per_second: float = 100.0
    rate_limit_key_burst: float = 200.0
    rate_limit_public_per_second: float = 10.0
    rate_limit_public_burst: float = 40.0
    # Buckets kept per process (LRU): the least recently seen client's bucket goes first.
    rate_limit_buckets: int = 100_000

    # Staff sessions (civicpulse/api/sessions.py): a session ends after this long without a
    # request (idle) and this long after its login (absolute), whichever comes first.
    session_idle_minutes: float = 60.0
    session_max_hours: float = 12.0
    # Logins: after this many consecutive failures an account is locked (429 with
    # Retry-After, the password unchecked) for login_lockout_seconds; and each client
    # address may try at most login_per_minute logins a minute per tenant (burst the same;
    # 0: no limit).
    login_max_failures: int = 5
    login_lockout_seconds: float = 900.0
    login_per_minute: float = 10.0
    # Argon2 hashes at once per process (each ~64 MiB and a core for ~0.2 s), and logins
    # that may wait for one; beyond that a login is answered 503 at once.
    password_hash_concurrency: int = 2
    password_hash_waiting: int = 32
    # Read only by `civicpulse user create` and `user reset-password` (the new password, so
    # that it never appears in the command line); when unset they prompt for it.
    new_password: Secret | None = None
    # Open311 without jurisdiction_id: host names that each serve one tenant, as
    # "311.springfield.gov=springfield,311.shelbyville.gov=shelbyville". A request to such a
    # host may leave jurisdiction_id out (the spec requires it only where one endpoint serves
    # several jurisdictions); elsewhere it is required.
    open311_hosts: str = ""
    # The pages' maps: a tile URL template ({z}/{x}/{y}) and the attribution its provider
    # asks for. Empty: no tiles, markers and areas on a plain background.
    map_tile_url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    map_attribution: str = "&copy; OpenStreetMap contributors"

    schema_dir: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build Settings from CIVICPULSE_* variables; unknown names are an error."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        known = {f.name: f for f in fields(cls)}
        for key, raw in env.items():
            if not key.startswith("CIVICPULSE_"):
                continue
            name = key.removeprefix("CIVICPULSE_").lower()
            if name.startswith("test_"):
                continue  # read by the test suite
            if name not in known:
                raise ConfigError(f"unknown setting {key}")
            values[name] = _convert(key, known[name].type, raw)
        return cls(**values)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.llm_json_mode not in ("json_schema", "json_object", "prompt"):
            raise ConfigError("CIVICPULSE_LLM_JSON_MODE must be json_schema, json_object or prompt")
        if self.llm_deadline_seconds <= 0:
            raise ConfigError("CIVICPULSE_LLM_DEADLINE_SECONDS must be above 0")
        if not 0 < self.pipeline_min_share <= 1:
            raise ConfigError("CIVICPULSE_PIPELINE_MIN_SHARE must be in (0, 1]")
        if self.stream_max_wakeups <= 0:
            raise ConfigError("CIVICPULSE_STREAM_MAX_WAKEUPS must be above 0")
        if self.session_idle_minutes <= 0 or self.session_max_hours <= 0:
            raise ConfigError(
                "CIVICPULSE_SESSION_IDLE_MINUTES and CIVICPULSE_SESSION_MAX_HOURS must be above 0"
            )
        if self.password_hash_concurrency < 1 or self.password_hash_waiting < 0:
            raise ConfigError(
                "CIVICPULSE_PASSWORD_HASH_CONCURRENCY must be at least 1 and "
                "CIVICPULSE_PASSWORD_HASH_WAITING at least 0"
            )
        if self.read_max_lag_seconds < 0 or self.read_lag_check_seconds <= 0:
            raise ConfigError(
                "CIVICPULSE_READ_MAX_LAG_SECONDS must not be negative and "
                "CIVICPULSE_READ_LAG_CHECK_SECONDS must be above 0"
            )
        self.open311_jurisdictions()  # refuses a malformed CIVICPULSE_OPEN311_HOSTS now
        if self.login_max_failures < 1:
            raise ConfigError("CIVICPULSE_LOGIN_MAX_FAILURES must be at least 1")
        if self.login_lockout_seconds < 0 or self.login_per_minute < 0:
            raise ConfigError(
                "CIVICPULSE_LOGIN_LOCKOUT_SECONDS and CIVICPULSE_LOGIN_PER_MINUTE must not be "
                "negative"
            )

    def open311_jurisdictions(self) -> dict[str, str]:
        """CIVICPULSE_OPEN311_HOSTS as {host (lower case, no port): tenant slug}."""
        out: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in self.open311_hosts.split(","))):
            host, sep, slug = part.partition("=")
            if not sep or not host.strip() or not slug.strip():
                raise ConfigError(f"CIVICPULSE_OPEN311_HOSTS: {part!r} is not host=slug")
            out[host.strip().lower()] = slug.strip()
        return out

    def replace(self, **changes: object) -> Settings:
        """Return a copy with some fields changed."""
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        current.update(changes)
        return Settings(**current)


def _convert(key: str, annotation: object, raw: str) -> object:
    kind = str(annotation)
    raw = raw.strip()
    try:
        if "Secret" in kind:
            return Secret(raw) if raw else None
        if "Path" in kind:
            return Path(raw) if raw else None
        if kind == "str | None":
            return raw or None
        if kind == "bool":
            lowered = raw.lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{key}: cannot read {raw!r} as {kind}") from exc
    return raw
