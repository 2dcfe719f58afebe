"""Check a wording family file against problems.json: every kind, at least 8 wordings each,
only the slots of the kind's set, each slot at most once, no duplicates."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

MIN_WORDINGS = 8
SLOT = re.compile(r"\{([a-z_]+)\}")


def problems(path: Path) -> list[str]:
    spec = json.loads((Path(__file__).parent / "problems.json").read_text())
    family = json.loads(path.read_text())
    out: list[str] = []
    wordings = family.get("wordings", {})
    for kind in spec["kinds"]:
        texts = wordings.get(kind["id"], [])
        allowed = set(spec["slots"][kind["set"]])
        if len(texts) < MIN_WORDINGS:
            out.append(f"{kind['id']}: {len(texts)} wordings, at least {MIN_WORDINGS} needed")
        for t, n in Counter(texts).items():
            if n > 1:
                out.append(f"{kind['id']}: duplicate wording {t!r}")
        for text in texts:
            slots = SLOT.findall(text)
            bad = [s for s in slots if s not in allowed]
            if bad:
                out.append(f"{kind['id']}: slot(s) {bad} not allowed in {text!r}")
            for s, n in Counter(slots).items():
                if n > 1:
                    out.append(f"{kind['id']}: slot {s} used {n} times in {text!r}")
            if re.sub(SLOT, "", text).count("{") or re.sub(SLOT, "", text).count("}"):
                out.append(f"{kind['id']}: stray brace in {text!r}")
    unknown = set(wordings) - {k["id"] for k in spec["kinds"]}
    out.extend(f"{k}: not a kind in problems.json" for k in sorted(unknown))
    return out


if __name__ == "__main__":
    found = problems(Path(sys.argv[1]))
    print("\n".join(found) if found else "ok")
    sys.exit(1 if found else 0)
