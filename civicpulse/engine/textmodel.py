"""The local classifier: a linear model over stemmed words and word pairs.

Trained per tenant from three sources, each a set of short documents with a category:
* the taxonomy: each category's name and description, and each of its keywords;
* the default vocabulary (civicpulse/data/vocabulary.json): how people name common problems,
  per category code of the civic and facility templates and per subtype (US 311 request
  types of Los Angeles, San Francisco, New York and Chicago; facility maintenance wordings);
* the tenant's labelled reports (imports and staff corrections), which outweigh the two
  others as soon as there are some: every label counts as much as a vocabulary phrase, and
  there are many of them.

Before any word is counted, what says where a problem is, not what it is, is taken out: the
report's address, street names ("Park Ave", "1432 W Vanowen St"), proper names of places
("Echo Park", "the Science Center"), rooms, units and floors, and landmarks built on
category words ("the gas station"). Words are stemmed (Snowball), so "heating" meets "heat".

The model is a multinomial logistic regression (full-batch Adam with an L2 penalty, numpy at
training time only; prediction is a sparse dot product in plain Python). Its probabilities
are calibrated by a temperature fitted on wordings the model never learned from
(bench/judgement/calibrate.py), so the confidence reads as the chance the category is right,
and `needs_review` means unsure. The
predicted category's subtype (pothole or sidewalk, toilet or drain) is the nearest vocabulary
subtype; grouping uses it to tell two problems at one spot apart. Pure functions on plain
data: models travel as msgpack bytes and worker processes cache them by digest.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import NamedTuple

import msgspec
import snowballstemmer

from civicpulse.engine import rules

MODEL_FORMAT = "linear-v2"
MAX_FEATURES = 40_000
# Probabilities are softmax(scores / TEMPERATURE), fitted by `python -m
# bench.judgement.calibrate` on wordings the model has not learned from (NLL 0.78 -> 0.50).
TEMPERATURE = 0.5
L2 = 0.2
ITERATIONS = 250
LEARNING_RATE = 0.5
# Alternatives: the next categories worth considering when grouping (at least this likely).
ALTERNATIVE_MIN = 0.05
ALTERNATIVES = 3
SUBTYPE_MIN = 0.05
# Subtype probabilities: softmax of the cosines to each subtype's phrases, this sharp.
SUBTYPE_SHARPNESS = 30.0

# Function words only: "no", "not", "out", "down", "off" and "up" stay, as they carry the
# problem here ("no heat", "light out", "tree down", "power off", "not working").
_STOPWORDS = """
    a an the and or of to in on at by for from with is are was were be been it its this that
    there here i we you he she they my our your their me us them has have had do does did
    very just so as please can could would will near next outside front back
    im i'm it's also again still being am get got getting gets one two some any all
    since about into over after before than then when while who what which where
    why how hi hello thanks thank pls plz asap today yesterday tonight morning night week
    weeks day days hour hours ago now
"""
STOPWORDS = frozenset(_STOPWORDS.split())
_LANGUAGE_WORDS = {
    "en": {"the", "and", "is", "of", "on", "in", "there", "please", "near", "street", "with",
           "for", "it", "at", "this", "by", "a", "has", "been", "from"},
    "es": {"el", "la", "de", "que", "en", "y", "los", "las", "calle", "hay", "por", "una"},
    "fr": {"le", "la", "les", "des", "est", "et", "dans", "rue", "une", "il", "pas", "sur"},
    "de": {"der", "die", "das", "und", "ist", "nicht", "ein", "eine", "strasse", "auf", "mit"},
    "pt": {"que", "em", "rua", "uma", "não", "na", "do", "da", "os", "com", "está"},
    "it": {"il", "la", "di", "che", "è", "e", "una", "strada", "nella", "del", "della"},
}  # fmt: skip


class Model(msgspec.Struct, frozen=True):
    format: str
    classes: list[str]
    idf: dict[str, float]
    weights: dict[str, list[float]]  # feature -> weight per class
    bias: list[float]
    temperature: float
    subtypes: dict[str, list[tuple[str, dict[str, float]]]]  # class -> [(subtype, centroid)]
    base_severity: dict[str, int]  # category -> severity it implies on its own
    labels: int
    vocabulary: str


class Prediction(NamedTuple):
    category: str
    confidence: float
    severity: int
    hazards: tuple[str, ...]
    language: str
    summary: str
    subtype: str | None = None
    alternatives: tuple[tuple[str, float], ...] = ()  # (category, probability), best first
    subtypes: tuple[tuple[str, float], ...] = ()  # (subtype, probability), best first


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
# Each tenant's model in this worker: a retrained model replaces its tenant's old one at once
# (a tenant editing its taxonomy retrains each time; the old versions must not pile up).
_worker_tenant_digest: dict[int, str] = {}
# Models a worker keeps, least recently loaded first out.
WORKER_MODELS = 64


# -- vocabulary ----------------------------------------------------------------------------------


class VocabularyEntry(msgspec.Struct, frozen=True):
    phrases: list[str]
    scope: str | None = None


class Vocabulary(msgspec.Struct, frozen=True):
    version: str
    categories: dict[str, dict[str, VocabularyEntry]]


@functools.cache
def vocabulary() -> Vocabulary:
    raw = resources.files("civicpulse.data").joinpath("vocabulary.json").read_bytes()
    return msgspec.json.decode(raw, type=Vocabulary)


@functools.cache
def subtype_scopes() -> dict[tuple[str, str], str]:
    """(category, subtype) -> scope, for the subtypes whose scope differs from a category's
    own ("no heat in the whole building" under a local building-fault category)."""
    return {
        (category, code): entry.scope
        for category, subtypes in vocabulary().categories.items()
        for code, entry in subtypes.items()
        if entry.scope is not None
    }


# -- what a text says about the problem ---------------------------------------------------------

_stemmer = snowballstemmer.stemmer("english")


@functools.lru_cache(maxsize=65_536)
def stem(word: str) -> str:
    return str(_stemmer.stemWord(word))


_STREET_ABBR = r"(?:st|str|ave|av|blvd|bl|rd|dr|ln|pl|ct|ter|hwy|pkwy|cir|sq|aly|plz)"
_STREET_FULL = (
    r"(?:street|avenue|boulevard|road|drive|lane|place|court|terrace|highway|parkway|circle|"
    r"square|alley|plaza|row|walk|way)"
)
# House number, direction and one or two words before an abbreviated street type:
# "1432 w vanowen st", "park ave", "van nuys blvd".
_ADDRESS = re.compile(
    r"(?:\b\d{1,6}[a-z]?\s+)?(?:\b[nsew]\.?\s+)?\b[a-z0-9][a-z0-9'\-]*"
    rf"(?:\s+[a-z0-9][a-z0-9'\-]*)?\s+{_STREET_ABBR}\b\.?",
    re.IGNORECASE,
)
# Places named after category words: "by the gas station" is not a gas leak.
_LANDMARKS = re.compile(
    r"\b(?:gas|fire|police|train|bus|subway|metro|petrol|service)\s+stations?\b"
    r"|\bfire\s+(?:department|dept|house|hall)\b|\b7-?eleven\b",
    re.IGNORECASE,
)
_PLACES = re.compile(
    r"\b(?:room|rm|suite|ste|unit|apt|apartment|flat|no|#)\s*#?\s*[a-z]?\d{1,5}[a-z]?\b"
    r"|#\s?\d+[a-z]?\b|\b\d{1,2}(?:st|nd|rd|th)\s+(?:floor|fl|level)\b"
    r"|\b(?:floor|level)\s+\d{1,2}\b",
    re.IGNORECASE,
)
_NUMBERS = re.compile(r"\b\d+[a-z]*\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z][a-z'\-]*[a-z]|[a-z]")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*|[.!?;:,()]")
# Words after which a capitalised run is a place: "in Echo Park", "at the Science Center".
# fmt: off
_PLACE_PREPOSITIONS = frozenset([
    "in", "on", "at", "near", "by", "along", "off", "from", "to", "of", "behind", "outside",
    "across", "around", "opposite", "past", "between", "beside", "towards", "toward", "into",
    "onto",
])
# fmt: on


def _name_spans(text: str) -> list[tuple[int, int]]:
    """Proper names of places: two or more capitalised words in a row after a preposition
    ("in Echo Park", "at the Main Library"), or capitalised words before a full street word
    ("Vanowen Street"). Capitals elsewhere may be a title or shouting ("Gas Leak!", "NO
    HEAT"), which is what the report is about."""
    tokens = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    spans: list[tuple[int, int]] = []
    run: list[tuple[str, int, int]] = []
    before: list[str] = []  # the lower-cased words before the current run

    def flush(street: bool) -> None:
        placed = bool(before) and (
            before[-1] in _PLACE_PREPOSITIONS
            or (before[-1] == "the" and len(before) > 1 and before[-2] in _PLACE_PREPOSITIONS)
        )
        if run and (street or (placed and len(run) >= 2)):
            spans.append((run[0][1], run[-1][2]))

    for token, start, end in tokens:
        low = token.lower()
        if not token[0].isalnum():
            flush(False)
            run = []
            before = []
            continue
        title = token[0].isupper() and (token[1:].islower() or token[1:].isdigit())
        if title and low not in STOPWORDS and not re.fullmatch(_STREET_FULL, low):
            run.append((token, start, end))
            continue
        street = bool(run) and token[0].isupper() and re.fullmatch(_STREET_FULL, low) is not None
        if street:
            run.append((token, start, end))
        flush(street)
        before.extend(w.lower() for w, _, _ in run)
        if not street:
            before.append(low)
        run = []
    flush(False)
    return spans


def content(text: str, address: str | None = None) -> str:
    """The text without what only says where: address, street and place names, rooms, units,
    floors, landmarks named after category words, numbers. Lower case."""
    s = text
    if address and (a := address.strip()):
        at = s.lower().find(a.lower())
        if at >= 0:
            s = s[:at] + " " + s[at + len(a) :]
    s = _LANDMARKS.sub(" ", s)
    for start, end in reversed(_name_spans(s)):
        s = s[:start] + " " + s[end:]
    s = _ADDRESS.sub(" ", s)
    s = _PLACES.sub(" ", s)
    s = _NUMBERS.sub(" ", s)
    return s.lower()


def words(text: str, address: str | None = None) -> list[str]:
    """Stemmed content words."""
    out = []
    for w in _WORD.findall(content(text, address).replace("'", "")):
        w = w.strip("-")
        if len(w) > 1 and w not in STOPWORDS:
            out.append(stem(w))
    return out


def features(text: str, address: str | None = None) -> list[str]:
    """Stemmed content words and adjacent pairs of them ("light_out", "no_heat")."""
    ws = words(text, address)
    return ws + [f"{a}_{b}" for a, b in itertools.pairwise(ws)]


def detect_language(text: str) -> str:
    """A two-letter guess from function words; 'und' when there is nothing to go on."""
    if re.search(r"[\u4e00-\u9fff]", text):
        return "zh"
    ws = set(re.findall(r"[a-zà-ÿ']+", text.lower()))
    scores = {lang: len(ws & vocab) for lang, vocab in _LANGUAGE_WORDS.items()}
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


# -- training -----------------------------------------------------------------------------------


def _vector(counts: Counter[str], idf: dict[str, float]) -> dict[str, float]:
    vec = {f: (1.0 + math.log(c)) * idf[f] for f, c in counts.items() if f in idf}
    norm = math.sqrt(sum(v * v for v in vec.values()))
    return {f: v / norm for f, v in vec.items()} if norm else {}


def training_documents(
    taxonomy: Sequence[TaxonomyEntry],
    labelled: Iterable[tuple[str, str]],
    vocab: Vocabulary,
) -> tuple[list[tuple[list[str], int]], dict[int, list[tuple[str, list[str]]]], int]:
    """(features, class) documents from the taxonomy, the vocabulary and the labels; the
    vocabulary's subtype phrases per class; and how many labels were used."""
    index = {t.code: i for i, t in enumerate(taxonomy)}
    docs: list[tuple[list[str], int]] = []
    subtype_docs: dict[int, list[tuple[str, list[str]]]] = defaultdict(list)
    for entry in taxonomy:
        i = index[entry.code]
        docs.append((features(f"{entry.name}. {entry.description}"), i))
        docs.extend((features(k), i) for k in entry.keywords)
        for code, sub in vocab.categories.get(entry.code, {}).items():
            for phrase in sub.phrases:
                f = features(phrase)
                docs.append((f, i))
                subtype_docs[i].append((code, f))
    used = 0
    for text, code in labelled:
        label = index.get(code)
        if label is not None:
            docs.append((features(text), label))
            used += 1
    return [d for d in docs if d[0]], subtype_docs, used


def _fit(
    docs: list[tuple[dict[str, float], int]], n_features: dict[str, int], n_classes: int
) -> tuple[list[list[float]], list[float]]:
    """Multinomial logistic regression, full-batch Adam with an L2 penalty (numpy)."""
    import numpy as np

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for number, (vec, _) in enumerate(docs):
        for feature, value in vec.items():
            rows.append(number)
            cols.append(n_features[feature])
            vals.append(value)
    n, d, k = len(docs), len(n_features), n_classes
    row = np.asarray(rows, dtype=np.int64)
    col = np.asarray(cols, dtype=np.int64)
    val = np.asarray(vals, dtype=np.float64)
    starts = np.searchsorted(row, np.arange(n))
    y = np.zeros((n, k))
    y[np.arange(n), [c for _, c in docs]] = 1.0
    w = np.zeros((d, k))
    b = np.zeros(k)
    mw, vw, mb, vb = np.zeros_like(w), np.zeros_like(w), np.zeros(k), np.zeros(k)
    for step in range(1, ITERATIONS + 1):
        scores = np.add.reduceat(val[:, None] * w[col], starts, axis=0) + b
        scores -= scores.max(axis=1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=1, keepdims=True)
        residual = (probs - y) / n
        grad_w = np.empty((d, k))
        for j in range(k):
            grad_w[:, j] = np.bincount(col, weights=val * residual[row, j], minlength=d)
        grad_w += (L2 / n) * w
        grad_b = residual.sum(axis=0)
        for param, grad, m1, m2 in ((w, grad_w, mw, vw), (b, grad_b, mb, vb)):
            m1 *= 0.9
            m1 += 0.1 * grad
            m2 *= 0.999
            m2 += 0.001 * grad * grad
            param -= (
                LEARNING_RATE * (m1 / (1 - 0.9**step)) / (np.sqrt(m2 / (1 - 0.999**step)) + 1e-8)
            )
    return w.tolist(), b.tolist()


def train(
    taxonomy: Sequence[TaxonomyEntry],
    labelled: Iterable[tuple[str, str]],
    vocab: Vocabulary | None = None,
) -> tuple[bytes, str]:
    """Fit a model; returns (model bytes, digest). Labels outside the taxonomy are ignored.
    `vocab` replaces the default vocabulary (bench/judgement/calibrate.py uses it)."""
    classes = [t.code for t in taxonomy]
    vocab = vocab or vocabulary()
    raw_docs, subtype_docs, used = training_documents(taxonomy, labelled, vocab)
    df: Counter[str] = Counter()
    for f, _ in raw_docs:
        df.update(set(f))
    n_docs = len(raw_docs)
    # Features seen in one document only are noise for a linear model on short texts, unless
    # the tenant has few documents (a new tenant with a custom taxonomy).
    kept = [f for f, c in df.most_common(MAX_FEATURES) if c > 1 or n_docs < 2_000]
    idf = {f: math.log((n_docs + 1) / (df[f] + 1)) + 1.0 for f in kept}
    index = {f: j for j, f in enumerate(kept)}
    docs = [(_vector(Counter(f), idf), c) for f, c in raw_docs]
    docs = [(v, c) for v, c in docs if v]
    weights, bias = _fit(docs, index, len(classes)) if docs else ([], [0.0] * len(classes))
    subtypes: dict[str, list[tuple[str, dict[str, float]]]] = {}
    for i, items in subtype_docs.items():
        sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for code, f in items:
            for feat, v in _vector(Counter(f), idf).items():
                sums[code][feat] += v
        subtypes[classes[i]] = [
            (code, {f: round(v, 5) for f, v in _vector_unit(dict(vec)).items()})
            for code, vec in sums.items()
        ]
    model = Model(
        MODEL_FORMAT,
        classes,
        {f: round(idf[f], 6) for f in kept},
        {f: [round(x, 6) for x in weights[j]] for f, j in index.items() if any(weights[j])},
        [round(x, 6) for x in bias],
        TEMPERATURE,
        subtypes,
        {t.code: base_severity(t.kind) for t in taxonomy},
        used,
        vocab.version,
    )
    blob = _encoder.encode(model)
    return blob, hashlib.sha256(blob).hexdigest()[:16]


def _vector_unit(vec: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(sum(v * v for v in vec.values()))
    return {f: v / norm for f, v in vec.items()} if norm else {}


def load(blob: bytes) -> Model:
    return _decoder.decode(blob)


# -- prediction ---------------------------------------------------------------------------------


def probabilities(model: Model, text: str, address: str | None = None) -> list[float]:
    """The calibrated probability of every class."""
    scores = list(model.bias)
    for f, v in _vector(Counter(features(text, address)), model.idf).items():
        row = model.weights.get(f)
        if row is not None:
            for i, w in enumerate(row):
                scores[i] += v * w
    top = max(scores)
    exps = [math.exp((s - top) / model.temperature) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def predict(model: Model, text: str, address: str | None = None) -> tuple[str, float]:
    """The most probable category and its calibrated probability."""
    probs = probabilities(model, text, address)
    best = max(range(len(probs)), key=probs.__getitem__)
    return model.classes[best], probs[best]


def subtype_mix(
    model: Model, category: str, text: str, address: str | None = None
) -> tuple[tuple[str, float], ...]:
    """The category's vocabulary subtypes with their probabilities (softmax of the cosines
    to each subtype's phrases), best first; nothing when no subtype is near at all."""
    options = model.subtypes.get(category)
    if not options:
        return ()
    vec = _vector(Counter(features(text, address)), model.idf)
    scores = [
        (code, sum(v * centroid.get(f, 0.0) for f, v in vec.items())) for code, centroid in options
    ]
    top = max(s for _, s in scores)
    if top < SUBTYPE_MIN:
        return ()
    weights = [(code, math.exp(SUBTYPE_SHARPNESS * (s - top))) for code, s in scores]
    total = sum(w for _, w in weights)
    ranked = sorted(((code, w / total) for code, w in weights), key=lambda x: -x[1])
    return tuple((code, round(p, 4)) for code, p in ranked if p >= 0.01)


def classify(
    model: Model,
    text: str,
    requested: str | None,
    names: dict[str, str],
    address: str | None = None,
) -> tuple[Prediction, str]:
    """Category, severity and the rest for one report; second item: who decided."""
    probs = probabilities(model, text, address)
    ranked = sorted(range(len(probs)), key=lambda i: -probs[i])
    category, confidence = model.classes[ranked[0]], probs[ranked[0]]
    decided_by = "local"
    alternatives = tuple(
        (model.classes[i], round(probs[i], 4))
        for i in ranked[:ALTERNATIVES]
        if probs[i] >= ALTERNATIVE_MIN
    )
    if (
        requested is not None
        and requested in model.base_severity
        and requested != category
        and confidence < 0.6
    ):
        # The reporter's own choice wins over an unsure model.
        category, confidence, decided_by = requested, max(confidence, 0.6), "rule"
        alternatives = around(category, confidence, alternatives)
    hazards, rule_severity = rules.hazards_in(rules.normalise(text))
    severity = max(
        model.base_severity.get(category, rules.DEFAULT_SEVERITY), rule_severity if hazards else 0
    )
    subtypes = subtype_mix(model, category, text, address)
    return Prediction(
        category,
        round(confidence, 4),
        severity,
        hazards,
        detect_language(text),
        summarise(text, names.get(category, category)),
        subtypes[0][0] if subtypes else None,
        alternatives,
        subtypes,
    ), decided_by


def around(
    category: str, confidence: float, others: Sequence[tuple[str, float]]
) -> tuple[tuple[str, float], ...]:
    """A category decided elsewhere (the reporter's choice, an LLM) with its confidence
    first, then the local model's other categories scaled to the rest of the probability."""
    rest = [(c, p) for c, p in others if c != category]
    total = sum(p for _, p in rest) or 1.0
    share = max(0.0, 1.0 - confidence)
    scaled = tuple((c, round(share * p / total, 4)) for c, p in rest)
    return ((category, round(confidence, 4)), *scaled)


def classify_batch(
    digest: str,
    blob: bytes | None,
    items: list[tuple[str, str | None, str | None]],
    names: dict[str, str],
    tenant: int | None = None,
) -> list[tuple[Prediction, str]]:
    """Classify one tenant's batch of (text, address, requested category) in a worker;
    raises ModelMissing when blob is needed."""
    model = _worker_models.get(digest)
    if model is None:
        if blob is None:
            raise ModelMissing(digest)
        model = load(blob)
        if tenant is not None:
            previous = _worker_tenant_digest.get(tenant)
            if previous is not None and previous != digest:
                _worker_models.pop(previous, None)
            _worker_tenant_digest[tenant] = digest
        while len(_worker_models) >= WORKER_MODELS:  # many tenants: forget the oldest
            _worker_models.pop(next(iter(_worker_models)))
        _worker_models[digest] = model
    return [classify(model, text, requested, names, address) for text, address, requested in items]


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
