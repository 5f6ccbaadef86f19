"""Fixtures for the training tests: a tiny BERT encoder (no head, like all-MiniLM-L6-v2) with a
tokenizer trained here, a learnable three-label toy task written to JSONL, and toy retrieval pairs
and extractive QA rows for the embedder, reranker and reader trainers."""
from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from tests.tiny_models import CORPUS, _bert_config, _tokenizer

# Each label has its own words (all in the tiny tokenizer's corpus); filler words are shared.
TOPICS = {
    "backup": ["backups", "restore", "archive", "daily", "morning", "command"],
    "pets": ["cat", "dogs", "mat", "bark", "night", "sat"],
    "security": ["vault", "encryption", "master", "key", "secret", "signed"],
}
FILLER = ["the", "on", "at", "a", "with", "per", "runs", "uses", "supports", "in"]


def tiny_encoder(folder: Path) -> Path:
    """A 2-layer BERT encoder without a task head, and its tokenizer, saved in `folder`."""
    import torch
    from transformers import BertModel

    torch.manual_seed(0)
    tokenizer = _tokenizer(folder)
    BertModel(_bert_config(len(tokenizer))).save_pretrained(str(folder))
    return folder


def toy_rows(n: int, seed: int) -> list[dict]:
    """`n` rows {"text", "label"}: three topic words and two fillers, labels in rotation."""
    rng = random.Random(seed)
    labels = sorted(TOPICS)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.sample(TOPICS[label], 3) + rng.sample(FILLER, 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def toy_task(folder: Path, n_train: int = 96, n_eval: int = 24) -> dict[str, Path]:
    """train/validation/test JSONL files of the toy task in `folder`."""
    return {"train": write_jsonl(folder / "train.jsonl", toy_rows(n_train, 1)),
            "validation": write_jsonl(folder / "validation.jsonl", toy_rows(n_eval, 2)),
            "test": write_jsonl(folder / "test.jsonl", toy_rows(n_eval, 3))}


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """Folder of a tiny BERT encoder + tokenizer (built once per test session)."""
    return tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> dict[str, Path]:
    """The toy task's train/validation/test JSONL files."""
    return toy_task(tmp_path_factory.mktemp("toy-data"))



# Retrieval and reading toys for the encoder trainers: every word is a word of tests/tiny_models.CORPUS.
SENTENCES = list(dict.fromkeys(CORPUS))  # the nine distinct corpus sentences
# One word per sentence that occurs in no other sentence: the answer of that sentence's question.
ANSWERS = ["7741", "three", "archive", "master", "saml", "mat", "night", "minute", "secret"]


_STOPWORDS = {"the", "on", "a", "at", "in", "and", "with", "per", "are", "uses", "run"}


def _content_words(sentence: str) -> list[str]:
    return [w for w in sentence.split() if w not in _STOPWORDS]


def toy_pairs(n: int, offset: int = 0) -> list[dict]:
    """`n` rows {"query", "positive", "negative"}; the positive joins two sentences, the negative
    shares the first of them (a hard negative), the query takes two content words of each.
    Rows `offset`..`offset + n` of one fixed order of the 72 sentence pairs, so slices never overlap."""
    combos = list(itertools.permutations(range(len(SENTENCES)), 2))
    random.Random(0).shuffle(combos)
    assert offset + n <= len(combos), "there are 72 toy pairs"
    rows = []
    for k, (i, j) in enumerate(combos[offset:offset + n], start=offset):
        rng = random.Random(k)
        other = rng.choice([x for x in range(len(SENTENCES)) if x not in (i, j)])
        words = rng.sample(_content_words(SENTENCES[i]), 2) + rng.sample(_content_words(SENTENCES[j]), 2)
        rows.append({"query": " ".join(words), "positive": f"{SENTENCES[i]} and {SENTENCES[j]}",
                     "negative": f"{SENTENCES[i]} and {SENTENCES[other]}"})
    return rows


def toy_qa(n: int, seed: int) -> list[dict]:
    """`n` rows {"question", "answer", "context"}: the context is three sentences (one of them the
    question's), the question is that sentence without its answer word."""
    rng = random.Random(seed)
    rows = []
    for k in range(n):
        i = k % len(SENTENCES)
        others = rng.sample([x for x in range(len(SENTENCES)) if x != i], 2)
        order = [i, *others]
        rng.shuffle(order)
        question = " ".join(w for w in SENTENCES[i].split() if w != ANSWERS[i])
        rows.append({"question": question, "answer": ANSWERS[i],
                     "context": ". ".join(SENTENCES[x] for x in order) + "."})
    return rows
