"""Write the Open311 dump samples (open311_requests_sample.json and .xml) from the real SF311
records in ../shared/data: every 40th record (the closed-before-opened ones included), as a
GeoReport v2 server would publish them. One record's coordinates are dropped, so the dump
holds a request located by address only. Run from the project root:

    .venv/bin/python tests/data/make_open311_sample.py
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from zoneinfo import ZoneInfo

from civicpulse.imports import OPEN311_FIELDS, SF_CATEGORIES

HERE = Path(__file__).parent
SOURCE = HERE.parents[1] / ".." / "shared" / "data" / "sf311_sample_2008-2016.csv"
SF = ZoneInfo("America/Los_Angeles")


def w3c(text: str) -> str | None:
    if text in ("", "NA"):
        return None
    return dt.datetime.fromisoformat(text).replace(tzinfo=SF).isoformat()


def main() -> None:
    with SOURCE.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    chosen = [r for n, r in enumerate(rows) if n % 40 == 0]
    chosen += [r for r in rows if r["Closed"] not in ("", "NA") and r["Closed"] < r["Opened"]][:3]
    requests = []
    for n, r in enumerate(chosen):
        closed = r["Closed"] not in ("", "NA")
        kind = " ".join(p for p in (r["Request.Type"], r["Request.Details"]) if p != "NA")
        item = {
            "service_request_id": r["CaseID"],
            "status": "closed" if closed else "open",
            "status_notes": None if r["Status.Notes"] == "NA" else r["Status.Notes"],
            "service_name": r["Category"],
            "service_code": SF_CATEGORIES.get(r["Category"], "other"),
            "description": kind or None,
            "agency_responsible": r["Responsible.Agency"],
            "service_notice": None,
            "requested_datetime": w3c(r["Opened"]),
            "updated_datetime": w3c(r["Closed"]) if closed else w3c(r["Opened"]),
            "expected_datetime": None,
            "address": r["Address"],
            "address_id": None,
            "zipcode": None if r["Zip"] == "NA" else r["Zip"],
            "lat": None if n == 5 else float(r["Lat"]),
            "long": None if n == 5 else float(r["Long"]),
            "media_url": None if r["Media.URL"] == "NA" else r["Media.URL"],
        }
        assert list(item) == list(OPEN311_FIELDS)
        requests.append(item)
    (HERE / "open311_requests_sample.json").write_text(json.dumps(requests, indent=1) + "\n")
    root = ET.Element("service_requests")
    for item in requests:
        request = ET.SubElement(root, "request")
        for key, value in item.items():
            ET.SubElement(request, key).text = None if value is None else str(value)
    ET.indent(root)
    (HERE / "open311_requests_sample.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
    )


if __name__ == "__main__":
    main()
