"""Baseline for the ingest benchmark: a typical FastAPI + pydantic + SQLAlchemy 2 ORM service.

It accepts the same JSON body as CivicPulse at POST /v1/tenants/{slug}/reports, validates it
with a pydantic model of the same constraints, and inserts one row per request through the
async ORM (session.add(); await session.commit()) before answering 202 with the new id.
What it does not do, unlike CivicPulse: authenticate the bearer key, resolve the tenant or its
taxonomy, row-level security, metrics. It is the "obvious way" to write this endpoint.

Run (the benchmark does this):
    BASELINE_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/bench_ingest \
    .venv/bin/python -m uvicorn bench.baselines.orm_app:app --host 127.0.0.1 --port 8392 \
        --workers 1 --loop uvloop --http httptools --no-access-log --log-level warning
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import DateTime, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DATABASE_URL = os.environ.get(
    "BASELINE_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/bench_ingest"
)
# Ten connections, like CivicPulse's default pool (CIVICPULSE_DB_POOL_MAX=10).
POOL_SIZE = int(os.environ.get("BASELINE_POOL_SIZE", "10"))


# -- request / response models (same constraints as civicpulse.domain.reports.ReportIn) ----

Channel = Literal["api", "web", "mobile", "phone", "email", "sms", "kiosk", "staff", "import"]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"^https?://")]


class Reporter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, max_length=500)
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    phone: str | None = Field(default=None, max_length=40, pattern=r"^[0-9+() .-]+$")


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1, max_length=4000)
    lat: float = Field(ge=-90.0, le=90.0)
    lon: float = Field(ge=-180.0, le=180.0)
    address: str | None = Field(default=None, max_length=500)
    category: str | None = Field(default=None, min_length=1, max_length=64)
    submitted_at: AwareDatetime | None = None
    channel: Channel = "api"
    reporter: Reporter | None = None
    attributes: dict[str, Any] = Field(default_factory=dict, max_length=50)
    media_urls: list[Url] = Field(default_factory=list, max_length=10)


class Links(BaseModel):
    self: str


class Accepted(BaseModel):
    id: str
    status: str
    links: Links


# -- ORM -----------------------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


class BaselineReport(Base):
    __tablename__ = "baseline_reports"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_slug: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    lat: Mapped[float]
    lon: Mapped[float]
    address: Mapped[str | None] = mapped_column(Text)
    requested_category: Mapped[str | None] = mapped_column(String(64))
    submitted_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    channel: Mapped[str] = mapped_column(String(16))
    reporter: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB)
    media_urls: Mapped[list[str]] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(String(16), default="received")


engine = create_async_engine(DATABASE_URL, pool_size=POOL_SIZE, max_overflow=0)
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield
    await engine.dispose()


async def get_session() -> AsyncIterator[AsyncSession]:
    async with SessionLocal() as session:
        yield session


app = FastAPI(title="baseline ingest", lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/tenants/{slug}/reports", status_code=202)
async def create_report(
    slug: str, report: ReportIn, session: Annotated[AsyncSession, Depends(get_session)]
) -> Accepted:
    row = BaselineReport(
        tenant_slug=slug,
        text=report.text,
        lat=report.lat,
        lon=report.lon,
        address=report.address,
        requested_category=report.category,
        submitted_at=report.submitted_at or dt.datetime.now(dt.UTC),
        channel=report.channel,
        reporter=None if report.reporter is None else report.reporter.model_dump(),
        attributes=report.attributes,
        media_urls=report.media_urls,
    )
    session.add(row)
    await session.commit()
    return Accepted(
        id=str(row.id), status=row.state, links=Links(self=f"/v1/tenants/{slug}/reports/{row.id}")
    )


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=8392,
        workers=1,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
    )
