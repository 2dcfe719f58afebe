"""The local classifier: TF-IDF class centroids (Rocchio) over words and word pairs.

Trained per tenant from its taxonomy (name, description and keywords of each category, as a
pseudo-document worth TAXONOMY_DOCS reports) plus labelled reports (imports and staff
corrections). A report goes to the category whose centroid is nearest by cosine. Centroids
are normalised, so a category with 5,000 labels does not drown one with five, and a word
never seen with a category simply adds nothing to it (naive Bayes smoothing, tried first,
let small classes win on words they had never seen). Pure functions on plain data: models
travel as msgpack bytes and worker processes cache them by digest, so a batch normally
carries only the digest.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgspec

from civicpulse.engine import rules

MODEL_FORMAT = "tfidf-v1"
TAXONOMY_DOCS = 5.0
MAX_FEATURES = 30_000
# Cosines are small numbers; this turns their differences into a usable confidence.
TEMPERATURE = 25.0

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_STOPWORDS = """
    a an the and or of to in on at by for from with is are was were be been it its this that
    there here i we you he she they my our your their me us them has have had do does did
    not no very just so as please can could would will near next outside front back
"""
STOPWORDS = frozenset(_STOPWORDS.split())
_LANGUAGE_WORDS = {
    "en": {
        "the",
        "and",
        "is",
        "of",
        "on",
        "in",
        "there",
        "please",
        "near",
        "street",
        "with",
        "for",
        "it",
        "at",
        "this",
        "by",
        "a",
        "has",
        "been",
        "from",
    },
    "es": {"el", "la", "de", "que", "en", "y", "los", "las", "calle", "hay", "por", "una"},
    "fr": {"le", "la", "les", "des", "est", "et", "dans", "rue", "une", "il", "pas", "sur"},
    "de": {"der", "die", "das", "und", "ist", "nicht", "ein", "eine", "strasse", "auf", "mit"},
    "pt": {"que", "em", "rua", "uma", "não", "na", "do", "da", "os", "com", "está"},
    "it": {"il", "la", "di", "che", "è", "e", "una", "strada", "nella", "del", "della"},
}


class Model(msgspec.Struct, frozen=True):
    format: str
    classes: list[str]
    idf: dict[str, float]
    # feature -> its weight in each class centroid (centroids have unit length)
    centroids: dict[str, list[float]]
    # category -> severity it implies on its own (before hazard rules)
    base_severity: dict[str, int]
    labels: int


class Prediction(NamedTuple):
    category: str
    confidence: float
    severity: int
    hazards: tuple[str, ...]
    language: str
    summary: str


class TaxonomyEntry(NamedTuple):
    code: str
    name: str
    description: str
    keywords: tuple[str, ...]
    kind: str


class ModelMissing(LookupError):
    """The worker does not hold this model yet: send it with the batch."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Model)
_worker_models: dict[str, Model] = {}


def features(text: str) -> list[str]:
    """Content words and adjacent pairs of them."""
    words = _WORD.findall(text.lower())
    out = [w for w in words if w not in STOPWORDS and len(w) > 1]
    # Pairs of content words: "light_out" and "no_plates" carry more than either word.
    return out + [f"{a}_{b}" for a, b in itertools.pairwise(out)]


def detect_language(text: str) -> str:
    """A two-letter guess from function words; 'und' when there is nothing to go on."""
    if re.search(r"[\u4e00-\u9fff]", text):
        return "zh"
    words = set(_WORD.findall(text.lower()))
    scores = {lang: len(words & vocab) for lang, vocab in _LANGUAGE_WORDS.items()}
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] > 0 else "und"


def summarise(text: str, category_name: str, limit: int = 140) -> str:
    """A short neutral line: the category, then the first sentence without shouting."""
    first = re.split(r"(?<=[.!?])\s+", text.strip(), maxsplit=1)[0]
    first = re.sub(r"[!?]+", ".", first).strip().rstrip(".")
    if first.isupper():
        first = first.capitalize()
    line = f"{category_name}: {first}"
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def base_severity(kind: str) -> int:
    return {"hazard": 4, "utilities": 3}.get(kind, rules.DEFAULT_SEVERITY)


def _unit(vector: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(v * v for v in vector.values()))
    return {f: v / norm for f, v in vector.items()} if norm else {}


def train(
    taxonomy: Sequence[TaxonomyEntry], labelled: Iterable[tuple[str, str]]
) -> tuple[bytes, str]:
    """Fit a model; returns (model bytes, digest). Labels outside the taxonomy are ignored."""
    classes = [t.code for t in taxonomy]
    index = {c: i for i, c in enumerate(classes)}
    docs: list[tuple[int, Counter[str], float]] = []
    for entry in taxonomy:
        words = features(" ".join([entry.name, entry.description]))
        for keyword in entry.keywords:  # through features(), so phrases match reports
            found = features(keyword)
            # A phrase counts as the phrase: "water main" must not make "Main St" watery.
            pairs = [f for f in found if "_" in f]
            words += (pairs or found) * 2
        docs.append((index[entry.code], Counter(words), TAXONOMY_DOCS))
    labels = 0
    for text, code in labelled:
        i = index.get(code)
        if i is None:
            continue
        labels += 1
        docs.append((i, Counter(features(text)), 1.0))
    df: Counter[str] = Counter()
    for _, counts, _ in docs:
        df.update(counts.keys())
    n_docs = len(docs)
    idf = {f: math.log((n_docs + 1) / (d + 1)) + 1.0 for f, d in df.items()}
    # Each centroid is half the category's own description (taxonomy) and half the mean of
    # its labelled reports, so thousands of imported labels sharpen a category without
    # washing out what its keywords say.
    described: list[dict[str, float]] = [defaultdict(float) for _ in classes]
    examples: list[dict[str, float]] = [defaultdict(float) for _ in classes]
    for i, counts, weight in docs:
        target = described if weight == TAXONOMY_DOCS else examples
        for f, v in _unit({f: (1 + math.log(c)) * idf[f] for f, c in counts.items()}).items():
            target[i][f] += v
    centroids_by_class = []
    for own, seen in zip(described, examples, strict=True):
        blend: dict[str, float] = defaultdict(float)
        for part in (_unit(dict(own)), _unit(dict(seen))):
            for f, v in part.items():
                blend[f] += v
        centroids_by_class.append(_unit(blend))
    weight_of: dict[str, float] = defaultdict(float)
    for centroid in centroids_by_class:
        for f, v in centroid.items():
            weight_of[f] += v
    kept = sorted(weight_of, key=lambda f: -weight_of[f])[:MAX_FEATURES]
    centroids = {f: [round(c.get(f, 0.0), 6) for c in centroids_by_class] for f in kept}
    model = Model(
        MODEL_FORMAT,
        classes,
        {f: round(idf[f], 6) for f in kept},
        centroids,
        {t.code: base_severity(t.kind) for t in taxonomy},
        labels,
    )
    blob = _encoder.encode(model)
    return blob, hashlib.sha256(blob).hexdigest()[:16]


def load(blob: bytes) -> Model:
    return _decoder.decode(blob)


def predict(model: Model, text: str) -> tuple[str, float]:
    """The nearest category by cosine, and a softmax confidence over the cosines."""
    vector = _unit(
        {
            f: (1 + math.log(c)) * model.idf[f]
            for f, c in Counter(features(text)).items()
            if f in model.idf
        }
    )
    scores = [0.0] * len(model.classes)
    for f, v in vector.items():
        for i, w in enumerate(model.centroids[f]):
            if w:
                scores[i] += v * w
    best = max(range(len(scores)), key=scores.__getitem__)
    top = scores[best]
    if top == 0.0 and "other" in model.classes:  # nothing known in the text at all
        best = model.classes.index("other")
    weights = [math.exp(TEMPERATURE * (s - top)) for s in scores]
    return model.classes[best], weights[best] / sum(weights)


def classify(
    model: Model, text: str, requested: str | None, names: dict[str, str]
) -> tuple[Prediction, str]:
    """Category, severity and the rest for one report; second item: who decided."""
    category, confidence = predict(model, text)
    decided_by = "local"
    if (
        requested is not None
        and requested in model.base_severity
        and requested != category
        and confidence < 0.6
    ):
        # The reporter's own choice wins over an unsure model.
        category, confidence, decided_by = requested, 0.6, "rule"
    hazards, rule_severity = rules.hazards_in(rules.normalise(text))
    severity = max(
        model.base_severity.get(category, rules.DEFAULT_SEVERITY), rule_severity if hazards else 0
    )
    return Prediction(
        category,
        round(confidence, 4),
        severity,
        hazards,
        detect_language(text),
        summarise(text, names.get(category, category)),
    ), decided_by


def classify_batch(
    digest: str,
    blob: bytes | None,
    items: list[tuple[str, str | None]],
    names: dict[str, str],
) -> list[tuple[Prediction, str]]:
    """Classify one tenant's batch in a worker; raises ModelMissing when blob is needed."""
    model = _worker_models.get(digest)
    if model is None:
        if blob is None:
            raise ModelMissing(digest)
        model = load(blob)
        if len(_worker_models) > 64:  # many tenants: forget the oldest
            _worker_models.pop(next(iter(_worker_models)))
        _worker_models[digest] = model
    return [classify(model, text, requested, names) for text, requested in items]


def evaluate(pairs: Iterable[tuple[str, str]], predicted: Iterable[str]) -> dict[str, object]:
    """Macro-F1 and per-class precision/recall/F1 for (text, truth) pairs."""
    truth_counts: Counter[str] = Counter()
    pred_counts: Counter[str] = Counter()
    hits: Counter[str] = Counter()
    for (_, truth), guess in zip(pairs, predicted, strict=True):
        truth_counts[truth] += 1
        pred_counts[guess] += 1
        if truth == guess:
            hits[truth] += 1
    per_class: dict[str, dict[str, float]] = {}
    for c in sorted(truth_counts):
        p = hits[c] / pred_counts[c] if pred_counts[c] else 0.0
        r = hits[c] / truth_counts[c]
        f = 2 * p * r / (p + r) if p + r else 0.0
        per_class[c] = {"precision": p, "recall": r, "f1": f, "support": truth_counts[c]}
    macro = sum(v["f1"] for v in per_class.values()) / max(1, len(per_class))
    accuracy = sum(hits.values()) / max(1, sum(truth_counts.values()))
    return {"macro_f1": macro, "accuracy": accuracy, "per_class": per_class}
