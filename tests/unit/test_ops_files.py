"""compose.yaml and the Dockerfile cannot be built here (no Docker engine), so check that
they are well-formed and point at files that exist."""

from __future__ import annotations

import re

import yaml

from tests.support import ROOT


def test_compose_file_is_valid_and_wires_the_service_to_postgres_15() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert services["db"]["image"] == "postgres:15"
    app = services["app"]
    assert (ROOT / app["build"]["context"] / app["build"]["dockerfile"]).is_file()
    assert app["environment"]["CIVICPULSE_DATABASE_URL"].startswith("postgresql://")
    assert app["depends_on"]["db"]["condition"] == "service_healthy"


def test_dockerfile_copies_only_paths_that_exist() -> None:
    text = (ROOT / "ops" / "Dockerfile").read_text()
    assert text.splitlines()[0].startswith("#") and "FROM python:3.11" in text
    for line in text.splitlines():
        match = re.match(r"COPY (?!--from)(.+) \S+$", line)
        if match:
            for source in match.group(1).split():
                assert (ROOT / source).exists(), source
