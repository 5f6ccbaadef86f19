"""Answer metrics: SQuAD-style exact match and token F1 on normalised answers (0-1 per example;
`squad_metrics` reports the means x 100, as the SQuAD papers do).

>>> f1_score("the cat sat", "a cat sat on the mat")
0.6666666666666666
"""
from __future__ import annotations

import collections
import re
import string

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, articles and extra whitespace (the SQuAD evaluation script's rules)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalised answers (1.0 when both are empty)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: list[str], golds: list[str]) -> dict:
    """Mean exact match and F1 (0-100) of predictions against one gold answer each."""
    n = max(len(golds), 1)
    return {"exact_match": 100 * sum(map(exact_match, predictions, golds)) / n,
            "f1": 100 * sum(map(f1_score, predictions, golds)) / n, "n": len(golds)}
