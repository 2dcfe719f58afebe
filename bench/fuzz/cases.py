"""Fuzz cases from the served OpenAPI document: a valid request per operation, then mutated.

Design rule: every case is derived from the spec, the ids the seed step collected and one
seeded random.Random, drawn in order, so `--seed` gives the same sequence of requests. A
case starts as a valid request (the right key, real ids, values within the schema's
bounds) and changes only the parts its `mutations` name, most often one, so a failing case
is already close to a minimal reproducer.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import string
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from bench.ingest.data import Record, report_body

SCOPE_RANK = {"submit": 0, "staff": 1, "admin": 2}
CODE_KINDS = ("categories", "places", "teams", "areas", "calendars", "sla-policies")


# -- what a case is ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of the OpenAPI document."""

    method: str
    path: str
    scope: str  # public | optional | submit | staff | admin
    params: tuple[dict[str, Any], ...]  # query and header parameters
    body: dict[str, Any] | None  # the request body's schema
    statuses: frozenset[int]

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def stream(self) -> bool:
        return self.path.endswith("/stream")


@dataclass(frozen=True, slots=True)
class Case:
    index: int
    op: str  # "METHOD /template", or "(off-spec)"
    method: str
    target: str  # the raw request target, already percent-encoded as sent
    headers: tuple[tuple[str, bytes], ...]
    body: bytes | None
    auth: str  # none | bad | submit | staff | admin | other (another tenant's key)
    key_tenant: str | None  # whose live key was sent (None: no usable key)
    key_scope: str | None
    path_slug: str | None  # the tenant slug in the path, decoded (None: no slug)
    mutations: tuple[str, ...]

    def encode(self, host: str) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1".encode("latin-1")]
        lines.append(f"Host: {host}".encode())
        lines += [name.encode("latin-1") + b": " + value for name, value in self.headers]
        if self.body is not None:
            lines.append(b"Content-Length: " + str(len(self.body)).encode())
        return b"\r\n".join(lines) + b"\r\n\r\n" + (self.body or b"")


@dataclass
class Corpus:
    """What the seed step created and read back: the values a valid request uses."""

    slug: str
    other_slug: str
    keys: dict[str, str]  # submit, staff, admin, other (admin key of other_slug)
    report_ids: dict[str, list[str]]  # slug -> ids
    issue_ids: dict[str, list[str]]
    versions: dict[str, int]  # issue id -> version when read
    codes: dict[str, dict[str, list[str]]]  # slug -> kind -> codes
    cursors: dict[str, str]  # "issues" / "reports" -> a real next_cursor
    records: list[Record] = field(repr=False, default_factory=list)
    seed_problems: list[str] = field(default_factory=list)


def operations(spec: dict[str, Any]) -> list[Op]:
    """Every operation of the document, with its scope, parameters and body schema."""
    ops = []
    for path, methods in spec["paths"].items():
        for method, entry in methods.items():
            security = entry.get("security", [])
            if not security:
                scope = "public"
            elif {} in security:
                scope = "optional"
            else:
                scope = security[0]["bearerAuth"][0]
            body = entry.get("requestBody", {}).get("content", {}).get("application/json")
            ops.append(
                Op(
                    method.upper(),
                    path,
                    scope,
                    tuple(p for p in entry.get("parameters", []) if p["in"] != "path"),
                    body["schema"] if body else None,
                    frozenset(int(s) for s in entry["responses"]),
                )
            )
    return ops


# -- JSON with raw tokens -----------------------------------------------------------------


class Raw(str):
    """JSON text emitted as it is (1e400, a 5,000-digit integer, nesting 2,000 deep)."""


class Pairs(list[tuple[str, Any]]):
    """A JSON object written from pairs, so a key can repeat."""


def dumps(value: Any, *, ascii_only: bool = True) -> bytes:
    """JSON bytes; with ascii_only False a lone surrogate goes out as raw (invalid) UTF-8."""
    out: list[str] = []

    def emit(v: Any) -> None:
        if isinstance(v, Raw):
            out.append(str(v))
        elif isinstance(v, dict | Pairs):
            out.append("{")
            for i, (k, x) in enumerate(v.items() if isinstance(v, dict) else v):
                out.append("," if i else "")
                out.append(json.dumps(k, ensure_ascii=ascii_only))
                out.append(":")
                emit(x)
            out.append("}")
        elif isinstance(v, list | tuple):
            out.append("[")
            for i, x in enumerate(v):
                out.append("," if i else "")
                emit(x)
            out.append("]")
        else:
            out.append(json.dumps(v, ensure_ascii=ascii_only))

    emit(value)
    return "".join(out).encode("utf-8", "surrogatepass")


def deep(depth: int, kind: str = "list") -> Raw:
    if kind == "list":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


# -- fuzz values -----------------------------------------------------------------------------

# Decoded values: percent-encoded before they go into a URL.
INT_FUZZ = [
    "", "0", "-1", "-0", "00000000000000000000001", "2147483648", "9223372036854775808",
    "18446744073709551616", "1" * 19, "1" * 5000, "-" + "9" * 5000, "1e3", "1.0", "1.5", " 5",
    "5 ", "+5", "0x10", "0o7", "1_000", "²", "٣", "５", "𝟓", "NaN", "inf", "true", "null",
    "\x00", "1\x00",
]  # fmt: skip
NUM_FUZZ = [
    "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "1e-400", "-0", "90.0000000001",
    "-90.1", "180.5", "-180.0000001", "1,5", "٣٤", "²", "0x1p3", "1_0", "", " ", "9" * 5000,
    "34.05\x00", "4.9e-324",
]  # fmt: skip
DATE_EDGES = [
    "0001-01-01", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31",
    "9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59.999999Z", "9999-12-30", "1900-01-01",
    "1899-12-31T23:59:59Z", "1900-01-01T00:00:00+14:00", "2200-01-01", "2200-01-01T00:00:01Z",
    "2199-12-31T23:59:59-14:00", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z",
    "2038-01-19T03:14:08Z", "2000-01-01",
]  # fmt: skip
DATE_FUZZ = [
    *DATE_EDGES,
    "0000-01-01", "2020-02-30", "2021-02-29", "2020-13-01", "2020-00-10", "2020-01-01T24:00:00",
    "2020-01-01T23:60:00", "2020-01-01T00:00:00+24:00", "2020-01-01T00:00:00+14:01",
    "2020-01-01T00:00:00-25:00", "2020-01-01T00:00:00.1234567890Z", "2020-01-01 00:00:00",
    "20200101", "2020-W01-1", "2020-001", "2020", "2020-01", "now", "-2020-01-01",
    "+12020-01-01", "١٩٩٩-٠١-٠١", "２０２０-０１-０１", "2020-01-01T00:00:00Z\x00", "", " ",
    "2020-01-01t00:00:00z", "1700000000", "2020-01-01T00:00:00.000000001+05:45",
]  # fmt: skip
STRING_FUZZ = [
    "", " ", "\x00", "a\x00b", "%", "_", "\\", "'", '"', "' OR 1=1 --", "a & b | !c", "(", ")",
    ":*", "<script>alert(1)</script>", "é", "ü" * 200, "𝕏", "💩", "\u202e", "\u200b", "\ufeff",
    "\uffff", "\U0010ffff", "a" * 201, "a" * 5000, "null", "[]", "{}", "../../etc/passwd",
    "${jndi:ldap://x}", "%s%s%n", "\r\n", "\t", "\x7f", "\x01", "*", "a,b,,c", ",",
]  # fmt: skip
BOOL_FUZZ = ["", "TRUE", "True", "1", "0", "yes", "no", "on", "2", "²", "null", "\x00", "tru"]
# Raw fragments: inserted into a URL without quoting (broken escapes, invalid UTF-8...).
RAW_FUZZ = [
    "%", "%zz", "%0", "%ff", "%FF%FE", "%C0%80", "%ED%A0%80", "%E2%82", "%F4%90%80%80", "%2500",
    "+", "%2B", "a+b", "%20", "%u0000", "%00", "a%00b", "%C2%B2", "%0D%0A", "%3B", ";",
]  # fmt: skip
SLUG_FUZZ = [
    "", "FUZZ", "\x00", "é", "a", "a" * 63, "a" * 64, "a" * 5000, "-a", "a--", "..", ".",
    "fuzz ", " fuzz", "fuzz\x00", "💩", "1", "0", "null", "fuzz.json", "FuZz", "ﬀ",
]  # fmt: skip
SLUG_RAW = ["%00", "fuzz%00", "%2F", "..%2F", "%ff", "%ED%A0%80", "%C2%B2", "%2e%2e", "fu%7Azz"]
BAD_AUTH = [
    b"", b"Bearer", b"Bearer ", b"Bearer  ", b"bearer", b"Token abc", b"Basic dXNlcjpwYXNz",
    b"Bearer cp_00000000_xxxxxxxx_yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy", b"Bearer " + b"x" * 10000,
    b"Bearer \xff\xfe", b"Bearer \xc2\xb2", b"Bearer \xb2", b"Bearer a\x01b", b"Bearer null",
    b"Bearer cp_", b"Bearer cp_" + b"_" * 60,
]  # fmt: skip
CONTENT_TYPES = [
    None, b"", b"text/plain", b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=x", b"application/merge-patch+json", b"APPLICATION/JSON",
    b"application/json; charset=latin-1", b"application/json; charset=utf-16",
    b"application/json;;;", b"application/jsonx", b"application/json; charset=\xff",
    b"*/*", b"application/", b"json",
]  # fmt: skip
IF_MATCH_FUZZ = [
    b'"1"', b'W/"1"', b"*", b"", b'"abc"', b'"-1"', b'"9999999999"', b"1" * 5000, b'"\xb2"',
    b'"\xc2\xb2"', b'"1", "2"', b' "1" ', b"W/", b'""', b'"0"', b'"\xd9\xa3"', b"1e3",
]  # fmt: skip
LAST_EVENT_ID_FUZZ = [
    b"0", b"1", b"-1", b"\xc2\xb2", b"\xb2", b"\xd9\xa3", b"1" * 5000, str(2**62).encode(),
    str(2**62 + 1).encode(), str(2**63).encode(), b"1.5", b"abc", b"", b" 5 ", b"0x10", b"1e3",
    b"99999999999999999999",
]  # fmt: skip
IDEMPOTENCY_FUZZ = [
    b"", b" ", b"a" * 200, b"a" * 201, b"a" * 10000, b"\xff\xfe", b"\xc3\xa9", b"\x01", b"\t",
    b"key with spaces", b"\x7f",
]  # fmt: skip
NON_JSON = [
    b"", b"{", b"}", b"nul", b"[1,]", b"{'a':1}", b"\xef\xbb\xbf{}", b"\xff\xfe{\x00}\x00",
    b"\xff", b"NaN", b"Infinity", b'{"a":1}garbage', b"{}{}", b"null", b"[]", b'"string"',
    b"0", b"true", b"\x00", b"{\x00}", b"  ", b"\n", b'{"text":"a"', b"[" * 100000,
    b'{"a":"\\u00"}', b'{"a":"\\x41"}', b'{"a":"\x00"}', b'{"a":"\xed\xa0\x80"}',
]  # fmt: skip
WEIRD_TEXT = [
    "\u202eevil", "a\u200bb", "\ufeffBOM", "\uffff", "\U0001f4a9" * 50, "e\u0301" * 500,
    "\u2028\u2029", "\x01\x02\x1f", "\x7f", "\u0000", "\ud800", "\udfff", "\ud800a",
    "\U0010ffff", "𝟓", "ß" * 1000, "İ" * 100,
]  # fmt: skip
WRONG_TYPES: list[Any] = [
    None, True, False, 0, -1, 1.5, "", "x", [], {}, "1", Raw("1e400"), Raw("-1e400"),
    Raw("1e-320"), Raw(str(2**70)), Raw(str(-(2**70))), Raw("9" * 5000), Raw("-0.0"),
    Raw("1.0e308"), [None], {"": None},
]  # fmt: skip
NUMBER_EDGES = [
    Raw("1e400"), Raw("-1e400"), Raw("1e-320"), Raw("4.9e-324"), Raw(str(2**70)),
    Raw(str(-(2**70))), Raw(str(2**63)), Raw(str(2**63 - 1)), Raw(str(2**31)), Raw("9" * 5000),
    Raw("-0.0"), Raw("0.1e-400"), Raw("1.0e308"), Raw("NaN"), Raw("Infinity"), Raw("-Infinity"),
    0, -1, 527040, 527041, 500000, 0.01, 0.99, 1e-9,
]  # fmt: skip


MANY_PARAMS: list[tuple[str, str | None]] = [(f"p{i}", "1") for i in range(2000)]


def b64(text: str | bytes) -> str:
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return base64.urlsafe_b64encode(raw).decode()


# -- the generator ---------------------------------------------------------------------------


class Generator:
    """Draws cases in order from one seeded random.Random."""

    def __init__(
        self,
        spec: dict[str, Any],
        corpus: Corpus,
        seed: int,
        *,
        poison_share: float = 0.01,
        off_spec_share: float = 0.03,
        limits: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.schemas: dict[str, Any] = spec["components"]["schemas"]
        self.ops = operations(spec)
        self.by_name = {op.name: op for op in self.ops}
        self.c = corpus
        self.rng = random.Random(seed)
        self.poison_share = poison_share
        self.limits = limits
        self.off_spec_share = off_spec_share
        self.poison = list(poison_cases())
        self._poison_next = 0
        self._slug = corpus.slug
        self.builders: dict[str, Callable[[], Any]] = {
            "ReportIn": self._report,
            "AreaIn": self._area,
            "CalendarIn": self._calendar,
            "PolicyIn": self._policy,
            "MergeIn": lambda: {"into": self._id("issue"), "note": "same pothole"},
            "SplitIn": lambda: {"report_id": self._id("report")},
            "RuleSet": self._rules,
            "RateLimitsIn": self._limits,
            "DashboardIn": self._dashboard,
            "CategoryIn": self._category,
            "PlaceIn": self._place,
            "PlaceWithCode": lambda: {**self._place(), "code": self._new_code("places")},
        }

    # -- the stream of cases ---------------------------------------------------------------

    def cases(self, count: int, start: int = 0) -> Iterator[Case]:
        for index in range(start, start + count):
            yield self.case(index)

    def case(self, index: int) -> Case:
        r = self.rng.random()
        if r < self.poison_share and self.poison:
            name, build = self.poison[self._poison_next % len(self.poison)]
            self._poison_next += 1
            return build(self, index, name)
        if r < self.poison_share + self.off_spec_share:
            return self._off_spec(index)
        op = self.rng.choice(self.ops)
        dims = ["auth", "query", "headers"]
        if "{" in op.path:
            dims.append("path")
        if op.body is not None:
            dims += ["body", "body", "body"]  # bodies have the most to break
        k = self.rng.choices([0, 1, 2, 3], weights=[12, 63, 18, 7])[0]
        fuzzed = set(self.rng.sample(dims, min(k, len(dims))))
        head = op.method == "GET" and not op.stream and self.rng.random() < 0.02
        return self.compose(op, index, fuzzed, method="HEAD" if head else None)

    def flood(self, count: int) -> Iterator[Case]:
        """Requests for made-up tenants and keys, every one new (the auth caches' worst case)."""
        forms = [
            ("GET /v1/tenants/{slug}/issues", "staff", "flood.random_slug_with_key"),
            ("GET /v1/tenants/{slug}/dashboard/data", "none", "flood.random_slug_no_key"),
            ("GET /v1/tenants/{slug}/issues", "random_key", "flood.random_key"),
        ]
        for index in range(count):
            name, auth, label = forms[index % len(forms)]
            slug = self.c.slug if auth == "random_key" else f"t-{self.rng.getrandbits(48):012x}"
            headers = []
            if auth == "random_key":
                key = f"cp_{self.rng.getrandbits(32):08x}_{self.rng.getrandbits(128):032x}"
                headers.append(("Authorization", f"Bearer {key}".encode()))
            case = self.compose(
                self.by_name[name],
                index,
                path_raw={"slug": slug},
                query_raw="",
                auth="bad" if auth == "random_key" else auth,
                mutations=(label,),
                headers=headers or None,
            )
            yield case

    # -- one request, valid except for the fuzzed dimensions ---------------------------------

    def compose(
        self,
        op: Op,
        index: int,
        fuzzed: Collection[str] = (),
        *,
        slug: str | None = None,
        path_raw: dict[str, str] | None = None,
        query: list[tuple[str, str]] | None = None,
        query_raw: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        body: Any = None,
        body_raw: bytes | None = None,
        auth: str | None = None,
        mutations: tuple[str, ...] = (),
        method: str | None = None,
    ) -> Case:
        rng = self.rng
        muts = list(mutations)
        tenant = slug or (self.c.other_slug if rng.random() < 0.12 else self.c.slug)
        self._slug = tenant
        # Auth: a sufficient key of the tenant in the path, unless fuzzed.
        if auth is None:
            auth = self._auth_valid(op)
            if "auth" in fuzzed:
                auth, label = self._auth_fuzz(op)
                muts.append(label)
        header_list: list[tuple[str, bytes]] = []
        key_tenant = key_scope = None
        if auth not in ("none", "bad"):
            key = self._key_for(auth, tenant)
            header_list.append(("Authorization", b"Bearer " + key.encode()))
            key_scope = "admin" if auth == "other" else auth
            key_tenant = tenant
            if auth == "other":
                key_tenant = self.c.other_slug if tenant == self.c.slug else self.c.slug
        elif auth == "bad":
            bad = rng.choice(BAD_AUTH)
            header_list.append(("Authorization", bad))
            if not bad:  # an empty header is no key at all
                auth = "none"
        path_slug: str | None = None
        # Path: one parameter fuzzed when the path is.
        path = op.path
        names = _path_names(op.path)
        target_param = rng.choice(names) if "path" in fuzzed and names else None
        for name in names:
            if path_raw and name in path_raw:
                value = path_raw[name]
            elif name == target_param:
                value, label = self._path_fuzz(name, op)
                muts.append(label)
            else:
                value = quote(self._path_valid(name, op), safe="")
            if name == "slug":
                path_slug = unquote(value)
            path = path.replace("{" + name + "}", value)
        # Query.
        if query_raw is not None:
            qs = query_raw
        else:
            pairs = query if query is not None else self._query_valid(op)
            raw_pairs = [(quote(k, safe=""), quote(v, safe="")) for k, v in pairs]
            if "query" in fuzzed:
                raw_pairs, label = self._query_fuzz(op, raw_pairs)
                muts.append(label)
            qs = "&".join(f"{k}={v}" if v is not None else k for k, v in raw_pairs)
        target = path + ("?" + qs if qs else "")
        # Body.
        payload: bytes | None = None
        if body_raw is not None:
            payload = body_raw
        elif body is not None:
            payload = dumps(body)
        elif op.body is not None:
            value = self.example(op.body)
            if "body" in fuzzed:
                value, label = self._body_fuzz(value)
                muts.append(label)
            ascii_only = rng.random() < 0.8
            payload = value if isinstance(value, bytes) else dumps(value, ascii_only=ascii_only)
        elif "body" in fuzzed:
            payload = dumps({"unexpected": "body"})
            muts.append("body.on_bodiless_route")
        # Headers.
        if payload is not None:
            header_list.append(("Content-Type", b"application/json"))
        for p in op.params:
            if p["in"] == "header" and rng.random() < 0.6:
                header_list.append((p["name"], self._header_valid(p["name"])))
        if headers is not None:
            names = {n.lower() for n, _ in headers}
            header_list = [(n, v) for n, v in header_list if n.lower() not in names] + headers
        if "headers" in fuzzed:
            header_list, label = self._header_fuzz(op, header_list, payload is not None)
            muts.append(label)
        return Case(
            index=index,
            op=op.name,
            method=method or op.method,
            target=target,
            headers=tuple(header_list),
            body=payload,
            auth=auth,
            key_tenant=key_tenant,
            key_scope=key_scope,
            path_slug=path_slug,
            mutations=tuple(muts),
        )

    # -- auth --------------------------------------------------------------------------------

    def _auth_valid(self, op: Op) -> str:
        if op.scope == "public":
            return "none"
        if op.scope == "optional":
            return self.rng.choice(["none", "staff", "admin"])
        return self.rng.choice([s for s, r in SCOPE_RANK.items() if r >= SCOPE_RANK[op.scope]])

    def _auth_fuzz(self, op: Op) -> tuple[str, str]:
        rng = self.rng
        options = ["none", "bad", "other"]
        if op.scope in ("staff", "admin", "optional"):
            options.append("low")
        if op.scope == "public":
            options.append("admin")
        pick = rng.choice(options)
        if pick == "low":
            need = 1 if op.scope == "optional" else SCOPE_RANK[op.scope]
            pick = rng.choice([s for s, r in SCOPE_RANK.items() if r < need])
            return pick, f"auth.low_scope({pick})"
        return pick, f"auth.{pick}"

    def _key_for(self, auth: str, tenant: str) -> str:
        """The key for `auth` as seen from `tenant`: "other" is a key of another tenant."""
        if auth == "other":
            return self.c.keys["other_admin" if tenant == self.c.slug else "admin"]
        if tenant == self.c.other_slug:
            return self.c.keys[f"other_{auth}"]
        return self.c.keys[auth]

    # -- path ---------------------------------------------------------------------------------

    def _code_kind(self, op: Op) -> str:
        for kind in CODE_KINDS:
            if f"/{kind}/" in op.path:
                return kind
        return "teams"

    def _path_valid(self, name: str, op: Op) -> str:
        rng = self.rng
        if name == "slug":
            return self._slug
        if name in ("report_id", "issue_id"):
            return self._id("report" if name == "report_id" else "issue")
        kind = self._code_kind(op)
        known = self.c.codes.get(self._slug, {}).get(kind, [])
        if known and (op.method == "GET" or rng.random() < 0.5):
            return rng.choice(known)
        return self._new_code(kind)

    def _path_fuzz(self, name: str, op: Op) -> tuple[str, str]:
        rng = self.rng
        r = rng.random()
        if name == "slug":
            if r < 0.3:  # a made-up tenant: grows the auth cache unless it is bounded
                return f"t-{rng.getrandbits(48):012x}", "path.slug:random_tenant"
            if r < 0.4:
                other = self.c.other_slug if self._slug == self.c.slug else self.c.slug
                return other, "path.slug:other_tenant"
            if r < 0.7:
                i = rng.randrange(len(SLUG_FUZZ))
                return quote(SLUG_FUZZ[i], safe=""), f"path.slug:fuzz[{i}]"
            i = rng.randrange(len(SLUG_RAW))
            return SLUG_RAW[i], f"path.slug:raw[{i}]"
        if name in ("report_id", "issue_id"):
            real = self._id("report" if name == "report_id" else "issue")
            choices: list[tuple[str, str]] = [
                (self._uuid(), "random_uuid"),
                (str(uuid.UUID(int=0)), "nil_uuid"),
                ("ffffffff-ffff-ffff-ffff-ffffffffffff", "max_uuid"),
                (real.upper(), "upper"),
                (real.replace("-", ""), "no_hyphens"),
                ("{" + real + "}", "braces"),
                ("urn:uuid:" + real, "urn"),
                (real[:-1], "short"),
                (real + "0", "long"),
                (self._id("report" if name == "issue_id" else "issue"), "wrong_kind_id"),
                (self._other_id(name), "other_tenant_id"),
            ]
            choices += [(v, f"fuzz[{i}]") for i, v in enumerate(INT_FUZZ[:12] + STRING_FUZZ[:8])]
            value, label = rng.choice(choices)
            if rng.random() < 0.15:
                raw = rng.choice(RAW_FUZZ)
                return quote(real, safe="") + raw, f"path.{name}:id+raw({raw})"
            return quote(value, safe=""), f"path.{name}:{label}"
        options = [
            ("a" * 64, "len64"), ("a" * 65, "len65"), ("A" * 10, "upper"), (".", "dot"),
            ("..", "dotdot"), ("a.b", "dotted"), ("-a", "leading_dash"), ("_a", "underscore"),
            ("a" * 5000, "len5000"), ("é", "non_ascii"), ("\x00", "nul"), ("", "empty"),
            ("a b", "space"), ("💩", "emoji"),
        ]  # fmt: skip
        if rng.random() < 0.25:
            raw = rng.choice(RAW_FUZZ)
            return "a" + raw, f"path.{name}:raw({raw})"
        value, label = rng.choice(options)
        return quote(value, safe=""), f"path.{name}:{label}"

    def _id(self, kind: str) -> str:
        ids = (self.c.report_ids if kind == "report" else self.c.issue_ids).get(self._slug, [])
        return self.rng.choice(ids) if ids else self._uuid()

    def _other_id(self, name: str) -> str:
        other = self.c.other_slug if self._slug == self.c.slug else self.c.slug
        table = self.c.report_ids if name == "report_id" else self.c.issue_ids
        ids = table.get(other, [])
        return self.rng.choice(ids) if ids else self._uuid()

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _new_code(self, kind: str) -> str:
        if kind == "places":
            return self.rng.choice(["B", "BLD", "RM", "FL"]) + f"-{self.rng.randrange(1000)}"
        if kind == "categories":
            return f"fz_{self.rng.randrange(200)}"
        return f"fz-{self.rng.randrange(200)}"

    # -- query ----------------------------------------------------------------------------------

    def _query_valid(self, op: Op) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for p in op.params:
            if p["in"] != "query":
                continue
            if p.get("required") or self.rng.random() < 0.4:
                for value in self._value_valid(p["name"], p["schema"]):
                    out.append((p["name"], value))
        return out

    def _value_valid(self, name: str, schema: dict[str, Any]) -> list[str]:
        """Valid values for a query parameter (several for a repeatable list)."""
        rng = self.rng
        schema = self.resolve(schema)
        if schema.get("type") == "array":
            values = [self._value_valid(name, schema["items"])[0] for _ in range(rng.randint(1, 3))]
            return values if rng.random() < 0.5 else [",".join(values)]
        if "enum" in schema:
            return [str(rng.choice(schema["enum"]))]
        kind = schema.get("type")
        if name in ("lat", "lon") and self.c.records:
            rec = rng.choice(self.c.records)
            return [f"{rec.lat if name == 'lat' else rec.lon:.5f}"]
        if name == "cursor":
            key = "reports" if schema.get("format") == "uuid" else "issues"
            return [self.c.cursors.get(key, "")]
        if name in ("category", "area", "team"):
            kind_of = {"category": "categories", "area": "areas", "team": "teams"}[name]
            known = self.c.codes.get(self._slug, {}).get(kind_of, []) or ["other"]
            return [rng.choice(known)]
        if name == "q":
            return [rng.choice(["graffiti", "couch", "streetlight", "water", "dumping", "tags"])]
        if kind == "integer":
            low = int(schema.get("minimum", 0))
            high = int(schema.get("maximum", low + 100))
            return [str(rng.choice([low, high, rng.randint(low, min(high, low + 100))]))]
        if kind == "number":
            return [str(rng.uniform(schema.get("minimum", -1), schema.get("maximum", 1)))]
        if kind == "boolean":
            return [rng.choice(["true", "false"])]
        if schema.get("format") == "date-time":
            return [self._recent_time()]
        return ["x"]

    def _recent_time(self) -> str:
        rng = self.rng
        when = dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
            seconds=rng.randrange(7 * 365 * 86400)
        )
        forms = [when.date().isoformat(), when.isoformat(), when.strftime("%Y-%m-%dT%H:%M:%SZ")]
        return rng.choice(forms)

    def _query_fuzz(
        self, op: Op, pairs: list[tuple[str, str | None]]
    ) -> tuple[list[tuple[str, str | None]], str]:
        rng = self.rng
        params = [p for p in op.params if p["in"] == "query"]
        r = rng.random()
        if params and r < 0.7:
            p = rng.choice(params)
            name = p["name"]
            schema = self.resolve(p["schema"])
            kind = schema.get("type")
            if kind == "array":
                kind = self.resolve(schema["items"]).get("type", "string")
            if schema.get("format") == "date-time":
                pool, label = DATE_FUZZ, "date"
            elif kind == "integer":
                pool, label = INT_FUZZ, "int"
            elif kind == "number":
                pool, label = NUM_FUZZ, "number"
            elif kind == "boolean":
                pool, label = BOOL_FUZZ, "bool"
            elif name == "cursor":
                pool, label = self._cursor_fuzz(), "cursor"
            else:
                pool, label = [*STRING_FUZZ, "DAY", "Day", "day,week", "category "], "string"
            kept = [(k, v) for k, v in pairs if k != name]
            if rng.random() < 0.2:
                raw = rng.choice(RAW_FUZZ)
                return [*kept, (name, raw)], f"query.{name}:raw({raw})"
            i = rng.randrange(len(pool))
            value = quote(pool[i], safe="")
            if rng.random() < 0.1:  # repeated, the second one fuzzed
                return [*pairs, (name, value)], f"query.{name}:repeated+{label}[{i}]"
            return [*kept, (name, value)], f"query.{name}:{label}[{i}]"
        shapes: list[tuple[list[tuple[str, str | None]], str]] = [
            ([("unknown", "1")], "unknown_param"),
            ([("", "5")], "empty_name"),
            ([("limit", None)], "no_value"),
            ([("%00", "1")], "nul_name"),
            ([("limit[]", "1")], "bracket_name"),
            (MANY_PARAMS, "2000_params"),
            ([("", None), ("", None)], "ampersands"),
            ([("a", "b=c=d")], "equals_in_value"),
            ([("%zz", "%zz")], "bad_escape"),
            ([("from", quote("2000-01-01", safe="")), ("to", quote("9999-12-30", safe=""))],
             "wide_range"),
            ([("from", quote("2030-01-01", safe="")), ("to", quote("2020-01-01", safe=""))],
             "reversed_range"),
        ]  # fmt: skip
        extra, label = rng.choice(shapes)
        return pairs + extra, f"query.{label}"

    def _cursor_fuzz(self) -> list[str]:
        some = self._uuid()
        return [
            b64(f"{d}|{some}") for d in ("0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59-14:00")
        ] + [
            b64(f"2020-01-01T00:00:00+00:00|{some}|x"),
            b64("2020-01-01\x00|" + some),
            b64(b"\xff\xfe"),
            b64("²|" + some),
            "====",
            "é",
            some,
            b64("|"),
            b64(f"{'9' * 5000}|{some}"),
            self.c.cursors.get("issues", "") + "x",
        ]

    # -- headers --------------------------------------------------------------------------------

    def _header_valid(self, name: str) -> bytes:
        rng = self.rng
        if name == "Idempotency-Key":
            # A few fixed keys, so replays (same body) and conflicts (another body) happen.
            if rng.random() < 0.3:
                return f"fuzz-key-{rng.randrange(20)}".encode()
            return self._uuid().encode()
        if name == "If-Match":
            version = rng.choice(list(self.c.versions.values()) or [1])
            return f'"{version}"'.encode()
        if name == "Last-Event-ID":
            return str(rng.randrange(1000)).encode()
        return b"x"

    def _header_fuzz(
        self, op: Op, headers: list[tuple[str, bytes]], has_body: bool
    ) -> tuple[list[tuple[str, bytes]], str]:
        rng = self.rng
        options = ["accept", "xff", "encoding", "expect", "dup_auth"]
        names = [p["name"] for p in op.params if p["in"] == "header"]
        options += names * 3
        if has_body:
            options += ["content-type"] * 4
        pick = rng.choice(options)

        def replace(name: str, value: bytes | None) -> list[tuple[str, bytes]]:
            kept = [(n, v) for n, v in headers if n.lower() != name.lower()]
            return kept if value is None else [*kept, (name, value)]

        if pick == "content-type":
            i = rng.randrange(len(CONTENT_TYPES))
            return replace("Content-Type", CONTENT_TYPES[i]), f"header.content_type[{i}]"
        if pick == "Idempotency-Key":
            i = rng.randrange(len(IDEMPOTENCY_FUZZ))
            return replace(pick, IDEMPOTENCY_FUZZ[i]), f"header.idempotency_key[{i}]"
        if pick == "If-Match":
            i = rng.randrange(len(IF_MATCH_FUZZ))
            return replace(pick, IF_MATCH_FUZZ[i]), f"header.if_match[{i}]"
        if pick == "Last-Event-ID":
            i = rng.randrange(len(LAST_EVENT_ID_FUZZ))
            return replace(pick, LAST_EVENT_ID_FUZZ[i]), f"header.last_event_id[{i}]"
        if pick == "accept":
            value = rng.choice([b"text/event-stream", b"application/xml", b"\xff", b"*/*;q=x"])
            return replace("Accept", value), "header.accept"
        if pick == "xff":
            value = rng.choice(
                [b"10.0.0.%d" % rng.randrange(256), b"garbage", b"::1, 1.2.3.4", b"\xff", b""]
            )
            return replace("X-Forwarded-For", value), "header.x_forwarded_for"
        if pick == "encoding":
            return replace("Content-Encoding", b"gzip"), "header.content_encoding_gzip"
        if pick == "expect":
            return replace("Expect", b"100-continue"), "header.expect_100"
        extra = ("Authorization", b"Bearer cp_not_a_key")
        return [*headers, extra], "header.second_authorization"

    # -- bodies ---------------------------------------------------------------------------------

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.schemas[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def example(self, schema: dict[str, Any], depth: int = 0) -> Any:
        """A valid value for `schema` (realistic for the types the service cares about)."""
        rng = self.rng
        schema = self.resolve(schema)
        build = self.builders.get(schema.get("title", ""))
        if build is not None:
            return build()
        if "anyOf" in schema:
            options = [s for s in schema["anyOf"] if s.get("type") != "null"]
            if not options or rng.random() < 0.15:
                return None
            return self.example(rng.choice(options), depth)
        if "enum" in schema:
            return rng.choice(schema["enum"])
        kind = schema.get("type")
        if kind == "object":
            props = schema.get("properties")
            if props is None:
                return {} if depth > 2 else {"k": "v", "n": rng.randrange(10)}
            required = set(schema.get("required", []))
            return {
                name: self.example(sub, depth + 1)
                for name, sub in props.items()
                if name in required or rng.random() < 0.5
            }
        if kind == "array":
            if "prefixItems" in schema:
                return [self.example(s, depth + 1) for s in schema["prefixItems"]]
            low = schema.get("minItems", 0)
            high = min(schema.get("maxItems", 3), max(low, 3))
            return [self.example(schema["items"], depth + 1) for _ in range(rng.randint(low, high))]
        if kind == "string":
            return self._string(schema)
        if kind == "integer":
            low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
            high = schema.get("maximum", low + 100)
            return rng.randint(int(low), int(min(high, low + 1000)))
        if kind == "number":
            low = schema.get("minimum", 0.0)
            return round(rng.uniform(low, schema.get("maximum", low + 100)), 4)
        if kind == "boolean":
            return rng.random() < 0.5
        return None

    def _string(self, schema: dict[str, Any]) -> str:
        rng = self.rng
        fmt = schema.get("format")
        if fmt == "date-time":
            return self._recent_time()
        if fmt == "date":
            return self._recent_time()[:10]
        if fmt == "uuid":
            return self._uuid()
        pattern = schema.get("pattern", "")
        if "24:00" in pattern or "[0-5][0-9]" in pattern:
            return f"{rng.randrange(24):02d}:{rng.choice([0, 15, 30, 45]):02d}"
        if pattern.startswith("^https?"):
            return f"https://example.org/{rng.randrange(1000)}.jpg"
        if "@" in pattern:
            return f"someone{rng.randrange(100)}@example.org"
        if "+()" in pattern:
            return "+1 (213) 555-0100"
        if pattern:
            return f"fz-{rng.randrange(100)}"
        low = schema.get("minLength", 1)
        high = min(schema.get("maxLength", 24), 24)
        n = rng.randint(low, max(low, high))
        return "".join(rng.choice(string.ascii_lowercase + " ") for _ in range(n)).strip() or "x"

    # builders for realistic bodies ---------------------------------------------------------

    def _codes(self, kind: str) -> list[str]:
        return self.c.codes.get(self._slug, {}).get(kind, [])

    def _report(self) -> dict[str, Any]:
        rng = self.rng
        body = report_body(rng, rng.choice(self.c.records))
        if rng.random() < 0.3 and self._codes("categories"):
            body["category"] = rng.choice(self._codes("categories"))
        if rng.random() < 0.2 and self._codes("places"):
            body["place"] = rng.choice(self._codes("places"))
        if rng.random() < 0.2:
            body["media_urls"] = [f"https://example.org/p/{rng.randrange(1000)}.jpg"]
        if rng.random() < 0.2:
            body.pop("submitted_at", None)
        return body

    def _area(self) -> dict[str, Any]:
        rng = self.rng
        lat, lon = 34.0 + rng.uniform(-0.2, 0.2), -118.3 + rng.uniform(-0.2, 0.2)
        d = rng.choice([0.001, 0.01, 0.05])
        ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
        geometry = {"type": "Polygon", "coordinates": [ring]}
        return {"name": f"Area {rng.randrange(100)}", "geometry": geometry}

    def _calendar(self) -> dict[str, Any]:
        rng = self.rng
        days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        hours = {d: [["08:00", "17:00"]] for d in days[: rng.choice([5, 6, 7])]}
        return {
            "timezone": rng.choice(["UTC", "America/Los_Angeles", "Europe/Paris", "Asia/Kolkata"]),
            "hours": hours,
            "holidays": [f"2026-12-{rng.randint(20, 31)}"],
        }

    def _policy(self) -> dict[str, Any]:
        rng = self.rng
        return {
            "name": "Standard",
            "calendar": rng.choice(self._codes("calendars") or ["office"]),
            "response_minutes": rng.choice([60, 240, None]),
            "resolution_minutes": rng.choice([1440, 4320, 10080]),
            "warn_ratio": 0.75,
            "priorities": rng.sample([1, 2, 3, 4, 5], 2),
        }

    def _rules(self) -> dict[str, Any]:
        rng = self.rng
        rules = []
        for i in range(rng.randint(1, 3)):
            then: dict[str, Any] = {"priority": rng.randint(1, 5)}
            if self._codes("teams") and rng.random() < 0.5:
                then["team"] = rng.choice(self._codes("teams"))
            when: dict[str, Any] = {"severity_min": rng.randint(1, 5)}
            if rng.random() < 0.3:
                when["hours"] = ["22:00", "06:00"]
            rules.append({"id": f"r{i}", "when": when, "then": then})
        return {"mode": rng.choice(["first", "all"]), "rules": rules}

    def _limits(self) -> dict[str, Any]:
        # The phase's own limits (a keeper task also puts them back every second).
        if self.limits is not None:
            return dict(self.limits)
        return {"key_per_second": self.rng.choice([0, 1e6]), "public_per_second": 0}

    def _dashboard(self) -> dict[str, Any]:
        rng = self.rng
        widgets = ["totals", "trend", "backlog", "categories", "rankings", "hotspots", "recent"]
        return {
            "public": rng.random() < 0.8,
            "widgets": rng.sample(widgets, rng.randint(1, len(widgets))),
            "title": "Fuzzed dashboard",
        }

    def _category(self) -> dict[str, Any]:
        rng = self.rng
        return {
            "service_code": f"FZ{rng.randrange(100)}",
            "name": "Fuzzed category",
            "keywords": ["pothole", "crack"],
            "group_radius_m": rng.choice([None, 25.0, 1000]),
        }

    def _place(self) -> dict[str, Any]:
        rng = self.rng
        body: dict[str, Any] = {
            "kind": rng.choice(["site", "building", "floor", "room"]),
            "name": f"Place {rng.randrange(1000)}",
            "aliases": ["Main"],
        }
        if self._codes("places") and rng.random() < 0.5:
            body["parent"] = rng.choice(self._codes("places"))
        if rng.random() < 0.5:
            body["lat"], body["lon"] = 34.05, -118.25
        return body

    # mutations ------------------------------------------------------------------------------

    def _body_fuzz(self, value: Any) -> tuple[Any, str]:
        rng = self.rng
        nodes = list(_walk(value))
        leaves = {
            "str": [(p, v) for p, v in nodes if isinstance(v, str) and not isinstance(v, Raw)],
            "num": [
                (p, v) for p, v in nodes if isinstance(v, int | float) and not isinstance(v, bool)
            ],
            "obj": [(p, v) for p, v in nodes if isinstance(v, dict)],
            "list": [(p, v) for p, v in nodes if isinstance(v, list)],
        }
        dates = [(p, v) for p, v in leaves["str"] if _looks_like_date(v)]
        kinds = ["type", "missing", "extra_key", "nul", "surrogate", "number", "nest", "big",
                 "date", "length", "non_json", "dup_key", "top_type", "weird_text"]  # fmt: skip
        weights = [12, 8, 8, 8, 6, 8, 5, 4, 6 if dates else 1, 5, 6, 3, 3, 6]
        kind = rng.choices(kinds, weights=weights)[0]
        if kind == "type" and nodes:
            path, _ = rng.choice(nodes)
            new = rng.choice(WRONG_TYPES)
            return _set(value, path, new), f"body.type({_short(new)})@{_path(path)}"
        if kind == "missing" and leaves["obj"]:
            path, obj = rng.choice(leaves["obj"])
            if obj:
                key = rng.choice(list(obj))
                return _set(value, (*path, key), _DELETE), f"body.missing@{_path((*path, key))}"
        if kind == "extra_key" and leaves["obj"]:
            path, _ = rng.choice(leaves["obj"])
            keys = ["unknown", "\x00", "a\x00b", "\ud800", "", "k" * 10000, "ключ", "__proto__"]
            i = rng.randrange(len(keys))
            return _set(value, (*path, keys[i]), "v"), f"body.extra_key[{i}]@{_path(path)}"
        if kind == "nul" and leaves["str"]:
            path, s = rng.choice(leaves["str"])
            return _set(value, path, s[:1] + "\x00" + s[1:]), f"body.nul@{_path(path)}"
        if kind == "surrogate" and leaves["str"]:
            path, s = rng.choice(leaves["str"])
            lone = rng.choice(["\ud800", "\udfff", "\udbff\u0041"])
            return _set(value, path, s + lone), f"body.lone_surrogate@{_path(path)}"
        if kind == "number" and (leaves["num"] or nodes):
            path, _ = rng.choice(leaves["num"] or nodes)
            new = rng.choice(NUMBER_EDGES)
            return _set(value, path, new), f"body.number({_short(new)})@{_path(path)}"
        if kind == "nest" and nodes:
            path, _ = rng.choice(nodes)
            depth = rng.choice([2000, 2000, 50000])
            form = rng.choice(["list", "dict"])
            new = deep(depth, form)
            return _set(value, path, new), f"body.nest({form},{depth})@{_path(path)}"
        if kind == "big":
            if leaves["list"] and rng.random() < 0.6:
                path, items = rng.choice(leaves["list"])
                item = items[0] if items else "x"
                # At most a few MB: past the body limits, more only costs the fuzzer.
                one = dumps(item).decode("utf-8", "surrogatepass")
                n = min(rng.choice([1001, 10000, 100000]), 3_000_000 // len(one))
                big = Raw("[" + ",".join([one] * n) + "]")  # written once, not item by item
                return _set(value, path, big), f"body.big_array({n})@{_path(path)}"
            if leaves["str"]:
                path, _ = rng.choice(leaves["str"])
                n = rng.choice([70_000, 1_000_000])
                return _set(value, path, "x" * n), f"body.big_string({n})@{_path(path)}"
        if kind == "date" and dates:
            path, _ = rng.choice(dates)
            i = rng.randrange(len(DATE_FUZZ))
            return _set(value, path, DATE_FUZZ[i]), f"body.date[{i}]@{_path(path)}"
        if kind == "length" and leaves["str"]:
            path, _ = rng.choice(leaves["str"])
            n = rng.choice([60, 64, 65, 100, 101, 200, 201, 500, 501, 2000, 2001, 4000, 4001])
            ch = rng.choice(["a", "é", "💩"])
            return _set(value, path, ch * n), f"body.length({n}x{ch!r})@{_path(path)}"
        if kind == "non_json":
            i = rng.randrange(len(NON_JSON))
            return NON_JSON[i], f"body.non_json[{i}]"
        if kind == "dup_key" and isinstance(value, dict) and value:
            key = rng.choice(list(value))
            pairs = Pairs([*list(value.items()), (key, rng.choice(WRONG_TYPES))])
            return pairs, f"body.duplicate_key@{key}"
        if kind == "weird_text" and leaves["str"]:
            path, _ = rng.choice(leaves["str"])
            i = rng.randrange(len(WEIRD_TEXT))
            return _set(value, path, WEIRD_TEXT[i]), f"body.weird_text[{i}]@{_path(path)}"
        tops: list[Any] = [[], {}, None, "x", 1, [value], Raw("1e400")]
        new = rng.choice(tops)
        return new, f"body.top_type({_short(new)})"

    # -- requests outside the spec ----------------------------------------------------------

    def _off_spec(self, index: int) -> Case:
        rng = self.rng
        op = rng.choice(self.ops)
        path = op.path
        for name in _path_names(path):
            path = path.replace("{" + name + "}", quote(self._path_valid(name, op), safe=""))
        choices = [
            ("DELETE", path, "wrong_method"),
            ("PUT", path, "wrong_method"),
            ("OPTIONS", path, "options"),
            ("TRACE", path, "trace"),
            ("FUZZ", path, "unknown_method"),
            ("get", path, "lower_case_method"),
            ("GET", path + "/", "trailing_slash"),
            ("GET", path + "/extra", "extra_segment"),
            ("GET", "//" + path.lstrip("/"), "double_slash"),
            ("GET", "/v1/tenants/", "tenants_root"),
            ("GET", "/v1/tenants/fuzz/unknown", "unknown_route"),
            ("GET", "/" + "a" * 20000, "long_path"),
            ("GET", "/v1/tenants/../../etc/passwd", "traversal"),
            ("GET", "/%00", "nul_root"),
            ("GET", "*", "asterisk"),
            ("GET", "http://127.0.0.1/healthz", "absolute_form"),
            ("POST", "/healthz", "post_health"),
        ]
        method, target, label = rng.choice(choices)
        head = method == "HEAD" or (label == "wrong_method" and rng.random() < 0.3)
        if head:
            method = "HEAD"
        headers: list[tuple[str, bytes]] = []
        body = None
        if method in ("PUT", "POST", "DELETE"):
            headers.append(("Content-Type", b"application/json"))
            body = b"{}"
        if rng.random() < 0.5:
            headers.append(("Authorization", ("Bearer " + self.c.keys["admin"]).encode()))
        return Case(
            index=index,
            op="(off-spec)",
            method=method,
            target=target,
            headers=tuple(headers),
            body=body,
            auth="admin" if any(n == "Authorization" for n, _ in headers) else "none",
            key_tenant=None,
            key_scope=None,
            path_slug=None,
            mutations=(f"off_spec.{label}",),
        )


# -- the poison corpus: the exact inputs issue 13 lists --------------------------------------

PoisonBuilder = Callable[[Generator, int, str], Case]


def poison_cases() -> Iterator[tuple[str, PoisonBuilder]]:
    reports = "POST /v1/tenants/{slug}/reports"
    base = {"text": "Pothole on Main St", "lat": 34.05, "lon": -118.25}

    def report(name: str, **changes: Any) -> tuple[str, PoisonBuilder]:
        def build(g: Generator, i: int, label: str) -> Case:
            return g.compose(
                g.by_name[reports], i, slug=g.c.slug, body={**base, **changes},
                mutations=(f"poison.{label}",),
            )  # fmt: skip

        return name, build

    def get(name: str, op: str, query_raw: str, **kw: Any) -> tuple[str, PoisonBuilder]:
        def build(g: Generator, i: int, label: str) -> Case:
            return g.compose(
                g.by_name[op], i, slug=g.c.slug, query_raw=query_raw,
                mutations=(f"poison.{label}",), **kw,
            )  # fmt: skip

        return name, build

    def send(name: str, op: str, body: Any, **kw: Any) -> tuple[str, PoisonBuilder]:
        def build(g: Generator, i: int, label: str) -> Case:
            value = body(g) if callable(body) else body
            raw = value if isinstance(value, bytes) else None
            return g.compose(
                g.by_name[op], i, slug=g.c.slug, body=None if raw else value, body_raw=raw,
                mutations=(f"poison.{label}",), **kw,
            )  # fmt: skip

        return name, build

    yield report("nul_text", text="a\x00b")
    yield report("nul_address", address="1 Main\x00 St")
    yield report("nul_reporter", reporter={"name": "A\x00B", "email": "a@example.org"})
    yield report("nul_attribute_key", attributes={"k\x00": "v"})
    yield report("nul_attribute_value", attributes={"k": "v\x00"})
    yield report("nul_media_url", media_urls=["https://example.org/\x00.jpg"])
    yield report("submitted_at_0001_plus14", submitted_at="0001-01-01T00:00:00+14:00")
    yield report("submitted_at_0001_utc", submitted_at="0001-01-01T00:00:00Z")
    yield report("submitted_at_9999_minus14", submitted_at="9999-12-31T23:59:59-14:00")
    yield report("attributes_nested_2000", attributes={"a": deep(2000, "dict")})
    yield report("lone_surrogate_text", text="a\ud800b")
    yield report("lat_1e400", lat=Raw("1e400"))
    yield send(
        "batch_with_poison",
        "POST /v1/tenants/{slug}/reports/batch",
        [base, {**base, "text": "a\x00b"}, {**base, "submitted_at": "0001-01-01T00:00:00Z"}],
    )
    yield send(
        "policy_500000_minutes",
        "PUT /v1/tenants/{slug}/sla-policies/{code}",
        lambda g: {"name": "P", "calendar": (g._codes("calendars") or ["office"])[0],
                   "response_minutes": 500000, "resolution_minutes": 500000},
    )  # fmt: skip
    yield send(
        "policy_warn_ratio_1e-320",
        "PUT /v1/tenants/{slug}/sla-policies/{code}",
        lambda g: {"name": "P", "calendar": (g._codes("calendars") or ["office"])[0],
                   "resolution_minutes": 60, "warn_ratio": Raw("1e-320")},
    )  # fmt: skip
    yield send(
        "calendar_never_open",
        "PUT /v1/tenants/{slug}/calendars/{code}",
        {"timezone": "UTC", "hours": {}, "holidays": []},
    )
    yield send(
        "calendar_every_day_a_holiday",
        "PUT /v1/tenants/{slug}/calendars/{code}",
        {
            "timezone": "UTC",
            "hours": {"mon": [["09:00", "09:01"]]},
            "holidays": [
                (dt.date(2026, 1, 1) + dt.timedelta(days=7 * n)).isoformat() for n in range(2000)
            ],
        },
    )
    yield get("days_superscript_two", "GET /v1/tenants/{slug}/dashboard/data", "days=%C2%B2")
    yield get(
        "days_superscript_two_no_key",
        "GET /v1/tenants/{slug}/dashboard/data",
        "days=%C2%B2",
        auth="none",
    )
    yield get("limit_5000_digits", "GET /v1/tenants/{slug}/reports", "limit=" + "1" * 5000)
    yield get("to_0001", "GET /v1/tenants/{slug}/analytics/trends", "to=0001-01-01")
    yield get(
        "to_9999_minus14",
        "GET /v1/tenants/{slug}/analytics/backlog",
        "to=9999-12-31T23%3A59%3A59-14%3A00",
    )
    yield get("sla_to_0001", "GET /v1/tenants/{slug}/metrics/sla", "to=0001-01-01")
    yield get(
        "export_9999", "GET /v1/tenants/{slug}/exports/issues.csv", "from=9999-12-31&to=9999-12-31"
    )
    yield get(
        "backlog_2000_to_9999",
        "GET /v1/tenants/{slug}/analytics/backlog",
        "from=2000-01-01&to=9999-12-30",
    )
    yield get(
        "cursor_at_9999",
        "GET /v1/tenants/{slug}/issues",
        "cursor=" + b64(f"9999-12-31T23:59:59-14:00|{uuid.UUID(int=1)}"),
    )
    yield get(
        "cursor_at_0001",
        "GET /v1/tenants/{slug}/issues",
        "cursor=" + b64(f"0001-01-01T00:00:00+14:00|{uuid.UUID(int=1)}"),
    )
    yield get("q_nul", "GET /v1/tenants/{slug}/issues", "q=%00")

    def slug_nul(g: Generator, i: int, label: str) -> Case:
        return g.compose(
            g.by_name["GET /v1/tenants/{slug}/issues"], i, path_raw={"slug": "%00"},
            mutations=(f"poison.{label}",),
        )  # fmt: skip

    yield "slug_nul", slug_nul

    def stream_id(value: bytes) -> PoisonBuilder:
        def build(g: Generator, i: int, label: str) -> Case:
            return g.compose(
                g.by_name["GET /v1/tenants/{slug}/stream"], i, slug=g.c.slug,
                headers=[("Last-Event-ID", value)], mutations=(f"poison.{label}",),
            )  # fmt: skip

        return build

    yield "last_event_id_superscript_two", stream_id("²".encode())
    yield "last_event_id_latin1_superscript_two", stream_id(b"\xb2")
    yield "last_event_id_5000_digits", stream_id(b"7" * 5000)
    yield send("team_name_nul", "PUT /v1/tenants/{slug}/teams/{code}", {"name": "Roads\x00"})
    yield send(
        "comment_nul", "POST /v1/tenants/{slug}/issues/{issue_id}/comments", {"note": "a\x00b"}
    )
    yield send(
        "area_geojson_key_nul",
        "PUT /v1/tenants/{slug}/areas/{code}",
        {
            "name": "A",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]],
                "k\x00": 1,
            },
        },
    )
    yield send(
        "place_geometry_nested_2000",
        "PUT /v1/tenants/{slug}/places/{code}",
        {"kind": "site", "name": "S", "geometry": {"type": "Polygon", "coordinates": deep(2000)}},
    )
    for op in ("transition", "assign", "comments"):
        yield send(
            f"status_order_{op}_no_key_bad_body",
            f"POST /v1/tenants/{{slug}}/issues/{{issue_id}}/{op}",
            b"{not json",
            auth="none",
        )
    yield send(
        "status_order_patch_no_key_bad_body",
        "PATCH /v1/tenants/{slug}/issues/{issue_id}",
        b"{not json",
        auth="none",
    )


# -- tree helpers ----------------------------------------------------------------------------

_DELETE = object()


def _walk(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, Raw):
        return
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, (*path, i))


def _set(root: Any, path: tuple[Any, ...], new: Any) -> Any:
    """A copy of root with the node at path replaced (or removed, with _DELETE)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(root, dict):
        out = dict(root)
        if rest:
            out[head] = _set(root[head], rest, new)
        elif new is _DELETE:
            out.pop(head, None)
        else:
            out[head] = new
        return out
    out_list = list(root)
    if rest:
        out_list[head] = _set(root[head], rest, new)
    elif new is _DELETE:
        del out_list[head]
    else:
        out_list[head] = new
    return out_list


def _path(path: tuple[Any, ...]) -> str:
    """A body path with list indices generalised, so one failure is one signature."""
    return ".".join("[]" if isinstance(p, int) else _short(p, 20) for p in path) or "$"


def _short(value: Any, limit: int = 24) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + f"...({len(text)})"


def _looks_like_date(s: str) -> bool:
    return len(s) >= 10 and s[4:5] == "-" and s[7:8] == "-" and s[:4].isdigit()


def _path_names(template: str) -> list[str]:
    return [part[1:-1] for part in template.split("/") if part.startswith("{")]
