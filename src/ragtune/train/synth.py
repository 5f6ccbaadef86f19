"""QA pairs made from documents: an eval set or reader training data when nobody wrote one.

Two methods. `generator` asks any configured LLM backend (`hf`, `openai`, a plugin) for facts of
each passage, each asked `per_fact` ways, as strict JSON; an answer is kept only when it occurs
verbatim (case-insensitive) in the passage, so every pair is extractive and checkable. `cloze`
runs offline with no model: it picks sentences holding a maskable span (a date, version, port,
number with its unit, amount of money, code span, path, multi-word name) and blanks it out.

>>> from ragtune.types import Document, Section
>>> doc = Document(id="sync.md", title="Sync", sections=[Section(
...     "The sync daemon listens on TCP port 7741 by default.", title="Sync > Ports")])
>>> for row in synthesize([doc], per_fact=2):
...     print(row["fact"], row["answer"], row["answer_start"], row["question"])
sf0001 7741 36 [Sync > Ports] The sync daemon listens on TCP port ____ by default.
sf0001 7741 36 In Sync > Ports: the sync daemon listens on TCP which port by default?

Rows load with `load_examples(path, "qa")` and train `ragtune train reader` as they are.
Several phrasings of one fact (`per_fact`) are what let fine-tuning absorb a fact (Ovadia et al.
2023, "Fine-tuning or retrieval?"). The cloze phrasings are rule-based and shallow: the same
sentence framed five ways, not real paraphrases; a generator writes real ones.
"""
from __future__ import annotations

import json
import random
import re
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Iterator, NamedTuple

from ragtune.config import IngestConfig
from ragtune.errors import ConfigError, GenerationError, InputError
from ragtune.generate.base import Prompt
from ragtune.knowledge.chunk import header_of, sentences
from ragtune.types import Document

METHODS = ("auto", "cloze", "generator")
NOT_WRITERS = ("extractive", "reader")  # generator backends that quote sources and cannot write questions
BLANK = "____"
MIN_WORDS, MAX_WORDS = 6, 60  # a cloze sentence's length
SPANS_PER_SENTENCE = 2
CLOZE_PHRASINGS = 5  # the templates of phrasings()
PASSAGE_CHARS = 1200  # what the generator reads per request
FACTS_PER_PASSAGE = 3  # asked of the generator per passage

# kind: (what the blank stands for, how a question asks for it)
KINDS = {
    "code": ("a code or setting name", "what"), "quoted": ("a quoted term", "what"), "url": ("a URL", "what URL"),
    "path": ("a file path", "what path"), "date": ("a date", "what date"),
    "address": ("a network address", "what address"),
    "version": ("a version", "which version"), "money": ("an amount of money", "how much"),
    "time": ("a time", "what time"), "port": ("a port number", "which port"), "duration": ("a duration", "how long"),
    "size": ("a size", "how much"), "percent": ("a percentage", "what percentage"), "count": ("a number", "how many"),
    "number": ("a number", "what number"), "year": ("a year", "what year"), "name": ("a name", "what"),
}
_MONTH = (r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?"
          r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)")
_DURATION = r"ms|milliseconds?|seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?"
_SIZE = r"bytes?|[KMGTP]i?B|kilobytes?|megabytes?|gigabytes?|terabytes?"
_NUM = r"(?<![\w.\-/:$€£#])\d[\d,]*(?:\.\d+)?"
# (kind, pattern) in priority order: a span overlapping an earlier one is not taken. Group 1, when
# present, is the answer; the whole match is what a question asks about ("port 7741": "which port").
PATTERNS = [(kind, re.compile(pattern)) for kind, pattern in [
    ("code", r"`([^`\n]{1,60})`"),
    ("quoted", r"[\"“]([^\"”\n]{2,40})[\"”]"),
    ("url", r"\bhttps?://[^\s<>`\"')\]]+"),
    ("path", r"(?<![\w`/.])(?:~?/[\w.\-]+(?:/[\w.\-]+)+/?|[A-Z]:\\[\w.\-]+(?:\\[\w.\-]+)+)"),
    ("date", rf"\b\d{{4}}-\d{{2}}-\d{{2}}\b|\b{_MONTH}\.? \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}\b"
             rf"|\b\d{{1,2}} {_MONTH} \d{{4}}\b|\b{_MONTH} \d{{4}}\b"),
    ("address", r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?\b"),
    ("version", r"(?<![\w.\-/])[vV]?\d+\.\d+\.\d+(?:-[0-9A-Za-z.]+)?\b"),
    ("money", r"[$€£]\s?\d[\d,]*(?:\.\d+)?(?:\s?(?:k|million|billion)\b)?|\b\d[\d,]*(?:\.\d+)?\s?(?:USD|EUR|GBP)\b"),
    ("time", r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp]\.?[Mm]\.?)?(?:\s?UTC)?(?!\d)"),
    ("port", r"\bports?\s+(\d{2,5})\b"),
    ("quantity", rf"{_NUM}\s?(?:%|percent\b|(?:{_DURATION}|{_SIZE})\b)"),
    ("version", r"\b(?:version|since|in|from|until|before|after) (\d+\.\d+)\b(?!\.\d)"
                r"|\b(\d+\.\d+)(?=\.x\b| or later\b)"),
    ("year", r"\b(?:19|20)\d{2}\b"),
    ("count", rf"(?<![\w.\-/:$€£#])(\d[\d,]*)\s+([a-z]{{3,}}s)\b"),
    ("number", rf"{_NUM}(?![\w\-/%]|[.,]\w)"),
    ("name", r"[A-Z][\w'&\-]*(?:\s+(?:(?:of|for|and|the|de|&)\s+)?[A-Z][\w'&\-]*)+"),
]]
# Words that end in s after a number but are verbs ("exit code 2 means ..."), not counted things.
_VERBS = frozenset("means is was has does goes makes takes uses runs returns starts becomes requires allows includes "
                   "gives keeps sets lets needs works applies stays remains shows prints exits fails expires lasts "
                   "adds also".split())
# Capitalised words that start a phrase without being part of a name ("The Business plan").
_LEADING = frozenset("the a an in on at for if when each every all use this that these those to with by from after "
                     "before since only most some any your our its their then also see note both no not as or and of "
                     "is are it you we while during under over per via because unless until once there here what "
                     "which how why where who new".split())


class Span(NamedTuple):
    """A maskable part of a sentence: character ranges of the answer, the blank and what is asked."""

    kind: str
    answer: tuple[int, int]
    blank: tuple[int, int]  # replaced by ____ ("`sync.port`" with its backticks; "7741" of "port 7741")
    asked: tuple[int, int]  # replaced by the question phrase ("port 7741" -> "which port")
    wh: str


class Fact(NamedTuple):
    source: str  # document id
    context: str  # the sentence or passage the answer is a span of
    answer_start: int
    answer: str
    questions: list[str]  # phrasings of one question, same answer
    method: str


class Passage(NamedTuple):
    source: str
    title: str  # document and section title, "Configuration > Sync"
    text: str


class Synthesized(list):
    """The rows `synthesize` made (a plain list of dicts), with what it left out and why."""

    def __init__(self, rows: Iterable[dict] = (), method: str = "", dropped: dict[str, int] | None = None,
                 skipped: list[str] | None = None):
        super().__init__(rows)
        self.method = method
        self.dropped = dropped or {}  # reason -> count: generator pairs failing the checks, cloze facts left out
        self.skipped = skipped or []  # "path: why" for files the readers could not use

    @property
    def facts(self) -> int:
        return len({row["fact"] for row in self})


# ---------------------------------------------------------------- reading


def read_documents(paths: Iterable[str | Path], ingest: IngestConfig | None = None) -> tuple[list[Document], list[str]]:
    """(documents, "path: why" of skipped files) from files and folders, read as `ragtune index` reads them."""
    from ragtune.knowledge.indexer import IndexReport, _documents, discover  # the indexer's own reading loop

    paths = [str(p) for p in paths]
    missing = [p for p in paths if not Path(p).expanduser().exists()]
    if missing:
        raise InputError(f"no such file or folder: {', '.join(missing)}")
    ingest, report = ingest or IngestConfig(), IndexReport()
    documents = [doc for path, doc_id in discover(paths, ingest, report)
                 for doc in _documents(path, doc_id, ingest, report, None, None)]
    return documents, [f"{where}: {why}" for where, why in report.skipped]


def gather_documents(documents: Iterable[Document | str | Path] | Document | str | Path,
                     ingest: IngestConfig | None) -> tuple[list[Document], list[str], str]:
    """(Documents given as they are plus those read from the given files and folders, "path: why"
    of skipped files, the input named for messages); InputError when there is no document at all."""
    given = [documents] if isinstance(documents, (str, Path, Document)) else list(documents)
    paths = [d for d in given if not isinstance(d, Document)]
    read, skipped = read_documents(paths, ingest) if paths else ([], [])
    found = [d for d in given if isinstance(d, Document)] + read
    where = ", ".join(map(str, paths)) or f"{len(found)} documents"
    if not found:
        raise InputError(f"no readable documents in {where}" + (f" ({'; '.join(skipped[:3])})" if skipped else ""))
    return found, skipped, where


def sentence_groups(text: str, size: int) -> list[list[str]]:
    """The sentences of `text` (whitespace collapsed) in runs of up to `size` characters joined by
    spaces, in reading order; a sentence longer than `size` is a run of its own."""
    groups: list[list[str]] = []
    current: list[str] = []
    length = -1
    for sentence in [" ".join(s.split()) for s in sentences(text)] + [None]:
        if current and (sentence is None or length + 1 + len(sentence) > size):
            groups.append(current)
            current, length = [], -1
        if sentence:
            current.append(sentence)
            length += 1 + len(sentence)
    return groups


# ---------------------------------------------------------------- cloze


def clean_sentence(text: str) -> str:
    """A sentence as a context: list marker, bold marks and link targets dropped, whitespace collapsed."""
    text = re.sub(r"^\s*(?:[-*+•]|\d+[.)])\s+", "", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text.replace("**", ""))
    return " ".join(text.split())


def usable(sentence: str) -> bool:
    """Whether a cleaned sentence can carry a cloze question: prose of 6-60 words, not a heading,
    table row, question or lead-in ("... as follows:")."""
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS or sentence.startswith(("|", "#", ">", "<", "```")):
        return False
    if sentence.count("|") >= 2 or sentence.endswith((":", "?")) or not re.search(r"[a-z]", sentence):
        return False
    capitalised = sum(w[0].isupper() for w in words)
    return capitalised <= 0.6 * len(words)  # Title Case lines are headings


def _make_span(kind: str, match: re.Match, sentence: str) -> Span | None:
    start, end = match.span()
    if kind == "name":  # drop leading function words and a sentence-initial word; keep 2+ words
        words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", match.group())]
        while words and (sentence[words[0][0]:words[0][1]].lower() in _LEADING or words[0][0] == 0):
            words.pop(0)
        while words and sentence[words[-1][0]:words[-1][1]].lower() in _LEADING:
            words.pop()
        if len(words) < 2 or re.match(r"[\\/\w]", sentence[words[-1][1]:words[-1][1] + 1]):
            return None  # two words needed; "NT SERVICE\QuillmateServer" is a path, not a name
        start, end = words[0][0], words[-1][1]
    if kind in ("url", "path", "name"):
        end = start + len(sentence[start:end].rstrip(".,;:)"))
    if kind == "quantity":
        unit = sentence[start:end].lstrip("0123456789,. ")
        kind = "percent" if unit in ("%", "percent") else "duration" if re.fullmatch(_DURATION, unit) else "size"
    wh = KINDS[kind][1]
    if kind == "count":
        if match.group(2) in _VERBS:
            return None
        wh = f"how many {match.group(2)}"
        return Span(kind, match.span(1), match.span(1), (start, end), wh)
    if kind in ("code", "quoted", "port"):
        answer = match.span(1)
        return Span(kind, answer, answer if kind == "port" else (start, end), (start, end), wh)
    if match.lastindex:  # "in 3.1": the version, not the word before it
        start, end = match.span(match.lastindex)
    return Span(kind, (start, end), (start, end), (start, end), wh)


def find_spans(sentence: str) -> list[Span]:
    """Maskable spans of `sentence`, best kinds first, none overlapping another.

    >>> [(s.kind, "The sync daemon listens on TCP port 7741 since 2024-03-01."[slice(*s.answer)])
    ...  for s in find_spans("The sync daemon listens on TCP port 7741 since 2024-03-01.")]
    [('date', '2024-03-01'), ('port', '7741')]
    """
    spans: list[Span] = []
    for kind, pattern in PATTERNS:
        for match in pattern.finditer(sentence):
            span = _make_span(kind, match, sentence)
            if span is None or span.answer[0] >= span.answer[1]:
                continue
            low, high = min(span.blank[0], span.asked[0]), max(span.blank[1], span.asked[1])
            if not any(low < max(s.blank[1], s.asked[1]) and min(s.blank[0], s.asked[0]) < high for s in spans):
                spans.append(span)
    return spans


def _contains(text: str, answer: str) -> bool:
    """Whether `answer` occurs in `text` as a token, case-insensitively ("2" is not in "3.2.0")."""
    return re.search(rf"(?<![\w.]){re.escape(answer)}(?!\w|\.\w)", text, re.I) is not None


def phrasings(sentence: str, span: Span, title: str) -> list[str]:
    """Up to five different cloze questions for one span, the title-prefixed blank first; those
    that would still show the answer are left out."""
    (a, b), (c, d) = span.blank, span.asked
    masked = sentence[:a] + BLANK + sentence[b:]
    described = KINDS[span.kind][0]
    pre = sentence[:c]
    echo = f"{pre}{span.wh}{sentence[d:]}".rstrip(" .!;") + "?" if pre.strip() else None
    if echo and pre.split()[0].lower() in _LEADING:  # "The sync ..." reads on after "In X:" in lower case
        echo = echo[0].lower() + echo[1:]
    where = f" from {title}" if title else ""
    candidates = [
        f"[{title}] {masked}" if title else masked,
        (f"In {title}: {echo}" if title else echo[0].upper() + echo[1:]) if echo else None,
        f"Fill in the blank with {described}: {masked}",
        f"Which {described.split(' ', 1)[1]} completes this sentence{where}? \"{masked}\"",
        masked,
    ]
    answer = sentence[slice(*span.answer)]
    return list(dict.fromkeys(q for q in candidates if q and not _contains(q, answer)))


def cloze_facts(documents: Iterable[Document], per_fact: int, dropped: dict[str, int]) -> list[Fact]:
    """Cloze facts of `documents` in reading order, at most SPANS_PER_SENTENCE per sentence; each
    distinct sentence is used once."""
    from ragtune.generate.extractive import candidates  # sentences, with short-line blocks split into lines

    facts, seen = [], set()
    for doc in documents:
        for section in doc.sections:
            title = header_of(doc, section.title)
            for raw in candidates(section.text):
                if re.search(r"\S {3,}\S", raw):  # a plain-text table (columns aligned with spaces)
                    continue
                sentence = clean_sentence(raw)
                key = sentence.lower()
                if key in seen or not usable(sentence):
                    continue
                seen.add(key)
                # an answer longer than the rest of the sentence leaves no question ("Use ____.")
                spans = [s for s in find_spans(sentence) if 2 * (s.answer[1] - s.answer[0]) <= len(sentence)]
                for span in spans[:SPANS_PER_SENTENCE]:
                    questions = phrasings(sentence, span, title)[:per_fact]
                    if not questions:
                        dropped["answer_in_question"] = dropped.get("answer_in_question", 0) + 1
                        continue
                    facts.append(Fact(doc.id, sentence, span.answer[0], sentence[slice(*span.answer)], questions,
                                      "cloze"))
    return facts


# ---------------------------------------------------------------- generator


def passages(documents: Iterable[Document], size: int = PASSAGE_CHARS) -> list[Passage]:
    """Sections cut into passages of whole sentences, up to `size` characters, in reading order."""
    out = []
    for doc in documents:
        for section in doc.sections:
            title = header_of(doc, section.title)
            for group in sentence_groups(section.text, size):
                text = " ".join(group)
                if len(text.split()) >= 12:
                    out.append(Passage(doc.id, title, text))
    return out


def question_prompt(passage: Passage, per_fact: int) -> Prompt:
    """The request for one passage: facts as JSON, each with `per_fact` phrasings and a copied answer."""
    ask = "one question" if per_fact == 1 else f"{per_fact} differently worded questions that all have that answer"
    user = (f"Passage from \"{passage.title or passage.source}\":\n\"\"\"\n{passage.text}\n\"\"\"\n\n"
            f"Pick up to {FACTS_PER_PASSAGE} important facts of the passage. For each, write {ask}, and the answer: "
            f"a short span (a few words) copied exactly from the passage. Each question must make sense on its own "
            f"(name the subject rather than saying \"the passage\") and must not contain the answer.\n"
            f"Reply with only a JSON list, no other text:\n"
            f"[{{\"questions\": [\"...\"], \"answer\": \"...\"}}]")
    messages = [{"role": "system", "content": "You write quiz questions about documents. You reply with JSON only."},
                {"role": "user", "content": user}]
    return Prompt(question=user, sources=[], messages=messages)


def _items(value: Any) -> list | None:
    if isinstance(value, dict):
        if {"answer", "question", "questions"} & set(value):
            return [value]
        return next((v for v in value.values() if isinstance(v, list)), None)  # {"facts": [...]}
    return value if isinstance(value, list) else None


def parse_reply(text: str) -> list | None:
    """The JSON items of a model's reply: the whole reply, else its first [ or { to its last ] or },
    else every complete {...} in it (a reply cut off at the token limit). None when there are none."""
    text = re.sub(r"```(?:json)?", "", text).strip()
    opening = [i for i in (text.find("["), text.find("{")) if i >= 0]
    tries = [text] + ([text[min(opening):max(text.rfind("]"), text.rfind("}")) + 1]] if opening else [])
    for attempt in tries:
        try:
            return _items(json.loads(attempt))
        except json.JSONDecodeError:
            continue
    objects, decoder, at = [], json.JSONDecoder(), text.find("{")
    while at >= 0:
        try:
            value, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            at = text.find("{", at + 1)
            continue
        objects.append(value)
        at = text.find("{", end)
    return objects or None


def reply_facts(reply: str, passage: Passage, per_fact: int, dropped: dict[str, int]) -> list[Fact]:
    """Facts of one reply whose answers occur in the passage (case-insensitive); the rest are counted
    in `dropped`. Pairs sharing an answer are phrasings of one fact."""
    items = parse_reply(reply)
    if items is None:
        dropped["unparseable_reply"] = dropped.get("unparseable_reply", 0) + 1
        return []
    by_answer: dict[str, tuple[int, str, list[str]]] = {}
    for item in items:
        item = item if isinstance(item, dict) else {}
        answer, questions = item.get("answer"), item.get("questions", item.get("question"))
        questions = [questions] if isinstance(questions, str) else questions
        if isinstance(questions, list):
            questions = [" ".join(q.split()) for q in questions if isinstance(q, str) and q.strip()]
        if not isinstance(answer, str) or not answer.strip() or not questions:
            dropped["malformed"] = dropped.get("malformed", 0) + 1
            continue
        found = re.search(re.escape(" ".join(answer.split())), passage.text, re.I)
        if found is None:
            dropped["answer_not_in_passage"] = dropped.get("answer_not_in_passage", 0) + 1
            continue
        start, exact, known = by_answer.setdefault(found.group().lower(), (found.start(), found.group(), []))
        known.extend(q for q in questions if q not in known)
    return [Fact(passage.source, passage.text, start, exact, known[:per_fact], "generator")
            for start, exact, known in by_answer.values()]


def generator_facts(generator: Any, documents: list[Document], per_fact: int, max_facts: int | None, seed: int,
                    dropped: dict[str, int], progress: bool) -> list[Fact]:
    """Facts from `generator`, one request per passage; passages in a seeded order until `max_facts`."""
    chosen = passages(documents)
    if not chosen:
        raise InputError("no passages to ask about: the documents hold no paragraph of 12 words or more")
    order = list(range(len(chosen)))
    if max_facts is not None:
        random.Random(seed).shuffle(order)
    found: list[tuple[int, Fact]] = []
    with _progress(progress, len(order)) as (bar, task):
        for i in order:
            reply = generator.generate(question_prompt(chosen[i], per_fact)).text
            found += [(i, fact) for fact in reply_facts(reply, chosen[i], per_fact, dropped)]
            bar.advance(task)
            if max_facts is not None and len(found) >= max_facts:
                break
    if not found:
        reasons = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in dropped.items())
        raise GenerationError(f"the generator '{getattr(generator, 'name', '?')}' gave no usable question/answer "
                              f"pairs for {len(chosen)} passages ({reasons}); it must reply with a JSON list of "
                              f"{{\"questions\": [...], \"answer\": \"...\"}} whose answers are copied from the "
                              f"passage. Try a stronger model, or --method cloze")
    found = sorted(found[:max_facts] if max_facts is not None else found, key=lambda item: item[0])
    return [fact for _, fact in found]


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[tuple[Any, Any]]:
    """(bar, task) of a rich progress bar over passages; a do-nothing bar when not `enabled`."""
    if not enabled:
        yield SimpleNamespace(advance=lambda task: None), None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("writing questions"), BarColumn(), MofNCompleteColumn(), TextColumn("passages"),
                  TimeElapsedColumn()) as bar:
        yield bar, bar.add_task("synth", total=total)


# ---------------------------------------------------------------- the entry points


def writes_questions(generator: Any) -> bool:
    return generator is not None and getattr(generator, "name", None) not in NOT_WRITERS


def synthesize(documents: Iterable[Document | str | Path], *, method: str = "auto", generator: Any = None,
               per_fact: int = 1, max_facts: int | None = None, seed: int = 0, progress: bool = True,
               ingest: IngestConfig | None = None) -> Synthesized:
    """QA rows made from `documents` (Documents, or files and folders read by the project's readers).

    Each row: {"id": "s0001", "fact": "sf0001", "question", "answer", "context", "answer_start",
    "source": document id, "method": "cloze" | "generator", "answerable": True}; the `per_fact`
    phrasings of a fact share its "fact" id and answer. `method="auto"` uses `generator` when it is
    one that writes text (not extractive or reader), else cloze. `max_facts` keeps that many facts,
    sampled with `seed`; cloze output depends only on the documents and the seed.
    """
    if method not in METHODS:
        raise InputError(f"unknown method '{method}': use one of {', '.join(METHODS)}")
    if per_fact < 1 or (max_facts is not None and max_facts < 1):
        raise InputError("per_fact and max_facts must be at least 1")
    if method == "generator" and not writes_questions(generator):
        raise ConfigError("method 'generator' needs a generator that writes text (generator.backend hf or openai); "
                          "use method 'cloze' to work without one")
    method = "generator" if method == "generator" or (method == "auto" and writes_questions(generator)) else "cloze"
    if method == "cloze" and per_fact > CLOZE_PHRASINGS:
        raise InputError(f"{per_fact} phrasings per fact: cloze makes at most {CLOZE_PHRASINGS}; ask for fewer, or "
                         f"use a generator (generator.backend hf or openai)")
    documents, skipped, where = gather_documents(documents, ingest)
    dropped: dict[str, int] = {}
    if method == "generator":
        facts = generator_facts(generator, documents, per_fact, max_facts, seed, dropped, progress)
    else:
        facts = cloze_facts(documents, per_fact, dropped)
        if not facts:
            raise InputError(f"no usable sentences in {where}: cloze questions need sentences of {MIN_WORDS}-"
                             f"{MAX_WORDS} words holding a date, version, number, code span, path or multi-word name")
        if max_facts is not None and len(facts) > max_facts:
            facts = [facts[i] for i in sorted(random.Random(seed).sample(range(len(facts)), max_facts))]
    rows = [{"id": "", "fact": f"sf{n:04d}", "question": question, "answer": fact.answer, "context": fact.context,
             "answer_start": fact.answer_start, "source": fact.source, "method": fact.method, "answerable": True}
            for n, fact in enumerate(facts, start=1) for question in fact.questions]
    for n, row in enumerate(rows, start=1):
        row["id"] = f"s{n:04d}"
    return Synthesized(rows, method=method, dropped=dropped, skipped=skipped)


PAIR_SENTENCES = ("random", "last")
PAIR_PASSAGE_CHARS = 4000  # a passage's text before its sentence is taken out; longer sections are cut


def inverse_cloze_pairs(documents: Iterable[Document | str | Path], *, sentence: str = "random",
                        max_pairs: int | None = None, seed: int = 0, passage_chars: int = PAIR_PASSAGE_CHARS,
                        ingest: IngestConfig | None = None) -> Synthesized:
    """(query, positive) rows for `train embedder` / `train reranker` from documents alone, by the
    inverse cloze task (Lee et al. 2019): one sentence of a passage is the query, the passage
    without that sentence, under its title, is the positive. No model and no labels.

    Each row: {"id": "p0001", "query", "positive", "source": document id, "method": "inverse-cloze"}.
    `sentence`: "random" (seeded) or "last" (a passage's last sentence: the conclusion of an
    abstract, which reads like a claim). A passage needs 3 or more sentences; the query sentence
    must be prose of 6-60 words. `max_pairs` samples that many with `seed`.

    >>> from ragtune.types import Section
    >>> doc = Document(id="d1", title="Sync", sections=[Section(
    ...     "Clients poll the server. The interval is set per client. The daemon listens on TCP port 7741 by default.")])
    >>> row = inverse_cloze_pairs([doc], sentence="last")[0]
    >>> row["query"], row["positive"]
    ('The daemon listens on TCP port 7741 by default.', 'Sync\\nClients poll the server. The interval is set per client.')
    """
    if sentence not in PAIR_SENTENCES:
        raise InputError(f"unknown sentence choice '{sentence}': use one of {', '.join(PAIR_SENTENCES)}")
    if max_pairs is not None and max_pairs < 1:
        raise InputError("max_pairs must be at least 1")
    documents, skipped, where = gather_documents(documents, ingest)
    rng = random.Random(seed)
    rows, dropped = [], {"under_3_sentences": 0, "without_a_6_to_60_word_sentence": 0}
    for doc in documents:
        for section in doc.sections:
            title = header_of(doc, section.title)
            for group in sentence_groups(section.text, passage_chars):
                if len(group) < 3:
                    dropped["under_3_sentences"] += 1
                    continue
                candidates = range(len(group) - 1, len(group)) if sentence == "last" else range(len(group))
                choices = [i for i in candidates if usable(clean_sentence(group[i]))]
                if not choices:
                    dropped["without_a_6_to_60_word_sentence"] += 1
                    continue
                i = choices[0] if sentence == "last" else rng.choice(choices)
                rest = " ".join(group[:i] + group[i + 1:])
                rows.append({"id": "", "query": clean_sentence(group[i]),
                             "positive": f"{title}\n{rest}" if title else rest, "source": doc.id,
                             "method": "inverse-cloze"})
    if not rows:
        raise InputError(f"no passages of 3 or more sentences with a 6-60 word sentence in {where}: "
                         f"inverse-cloze pairs need prose")
    if max_pairs is not None and len(rows) > max_pairs:
        rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), max_pairs))]
    for n, row in enumerate(rows, start=1):
        row["id"] = f"p{n:04d}"
    return Synthesized(rows, method="inverse-cloze", dropped={k: v for k, v in dropped.items() if v},
                       skipped=skipped)


def project_setup(folder: Path | None, method: str, per_fact: int) -> tuple[IngestConfig, Any]:
    """(ingest settings, generator or None) for `ragtune data synth`: from the project at `folder` (or
    the one around the current folder, if any); a generator only when the method may use one and the
    configured backend writes text. Without a project: default ingest settings and cloze."""
    from ragtune.config import CONFIG_NAME, load_config
    from ragtune.project import find_project
    from ragtune.registry import create

    try:
        root = find_project(folder)
    except ConfigError:
        if folder is not None:
            raise
        if method == "generator":
            raise ConfigError(f"--method generator uses the generator of a project (generator.backend hf or openai "
                              f"in {CONFIG_NAME}) and there is no {CONFIG_NAME} here or in any parent folder: pass "
                              f"--project FOLDER, or use --method cloze") from None
        return IngestConfig(), None
    config = load_config(root / CONFIG_NAME)
    backend = config.generator.backend
    if method == "cloze" or backend in NOT_WRITERS:
        if method == "generator":
            raise ConfigError(f"--method generator: generator.backend in {root / CONFIG_NAME} is '{backend}', which "
                              f"cannot write questions; set it to hf or openai, or use --method cloze")
        return config.ingest, None
    # room for FACTS_PER_PASSAGE facts of per_fact questions in JSON
    tokens = max(config.generator.max_new_tokens, 64 + 48 * FACTS_PER_PASSAGE * (per_fact + 1))
    return config.ingest, create("generator", backend, config.generator.model_copy(update={"max_new_tokens": tokens}))
