"""Run the qa strategies on one split and write results/<strategy>.json for each.

The documents are copied into the results folder and indexed there with the project's settings
(so applying the knowledge update never touches the user's files). Every strategy answers the same
test questions through the real pipeline (`RAG.ask`), and each answer is scored against the gold
answer:
- `accuracy`, the primary metric: an answerable question counts as right when the gold answer
  occurs in the answer (the "match" accuracy used for LLM QA, e.g. Mallen et al. 2023, PopQA; fair
  to both a short span and a one- or two-sentence extractive quote), an unanswerable one when the
  strategy abstains;
- exact match and token F1 (SQuAD rules; an unanswerable question scores 1 when abstained), which
  reward short spans;
- abstention precision and recall, citations (valid; citing the gold document), faithfulness (the
  share of the answer's content words found in its cited sources; extractive answers are quotes, so
  `verbatim` says how many are copied word for word) and retrieval ranks (recall@k, MRR).

Freshness: the update questions are answered before the update, the changed documents are laid
over the copy and re-indexed (timed: that is how retrieval absorbs new knowledge), and they are
answered again.
"""
from __future__ import annotations

import math
import re
import shutil
import time
from pathlib import Path
from typing import Callable

from ragtune.evaluate.datasets import QAData
from ragtune.evaluate.metrics import exact_match, f1_score, normalize_answer
from ragtune.evaluate.records import base_record, latency_by_stage, metric, skipped

STRATEGIES = {
    "closed-book": ("closed-book", "the generator alone, without sources"),
    "rag-bm25": ("rag", "BM25 retrieval + the generator"),
    "rag-dense": ("rag", "dense retrieval + the generator"),
    "rag-hybrid": ("rag", "hybrid retrieval (BM25 + dense, fused) + the generator"),
    "rag-hybrid+rerank": ("rag", "hybrid retrieval reranked by the cross-encoder + the generator"),
    "rag+reader": ("hybrid", "hybrid retrieval + an extractive reader fine-tuned on the training questions"),
    "finetune": ("finetune", "a LoRA-tuned generator answering closed-book"),
    "finetune+rag": ("hybrid", "a LoRA-tuned generator answering from retrieved sources"),
    "raft": ("hybrid", "RAFT: a generator tuned on question + right chunk + distractors, with retrieval"),
}
GENERATIVE = ("hf", "openai")


def qa_strategies(compare=None) -> dict[str, tuple[str, str]]:
    """STRATEGIES plus a rag-hybrid@k<N> variant for each of compare.k_values."""
    extra = {f"rag-hybrid@k{k}": ("rag", f"hybrid retrieval, {k} sources + the generator")
             for k in (compare.k_values if compare is not None else [])}
    return {**STRATEGIES, **extra}
DOCS = "docs"  # the private copy's folder name: document ids are docs/<path>
WORK = ".compare-work"  # under the results folder
_MARKERS = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
_WORD = re.compile(r"\w+")
_STOP = frozenset("a an the of to in on at for by with and or is are was were be it its this that as from".split())


def strip_citations(text: str) -> str:
    return _MARKERS.sub("", text).strip()


def _matches(document_id: str, source: str | None) -> bool:
    """Whether a hit's document is the question's source file in the private copy (indexed as
    `docs/`): the file itself, or one of its rows for CSV/JSONL files (`docs/<file>#<row>`)."""
    if not source:
        return False
    target = f"{DOCS}/{source.strip('/')}"
    return document_id == target or document_id.startswith(target + "#")


def support(answer: str, sources: list[str]) -> float | None:
    """Share of the answer's content words that occur in its cited sources (None: no content words)."""
    words = [w for w in _WORD.findall(answer.lower()) if w not in _STOP]
    if not words:
        return None
    available = set(_WORD.findall(" ".join(sources).lower()))
    return sum(w in available for w in words) / len(words)


def score(row: dict, answer, gold: str | None = None) -> dict:
    """Per-example scores of one Answer against its question row (`gold` overrides the row's answer)."""
    golds = row.get("answers") or [row["answer"]] if gold is None else [gold]
    text = "" if answer.abstained else strip_citations(answer.text)
    answerable = row["answerable"] and bool(golds[0])
    out = {"abstained": answer.abstained, "answerable": answerable}
    if answerable:
        out.update(exact_match=max(exact_match(text, g) for g in golds), f1=max(f1_score(text, g) for g in golds),
                   contains=float(bool(text) and any(normalize_answer(g) in normalize_answer(text) for g in golds)))
    else:
        out.update(exact_match=float(answer.abstained), f1=float(answer.abstained), contains=float(answer.abstained))
    cited = [h for c in answer.citations for h in answer.hits[c.number - 1:c.number]]
    if not answer.abstained:
        out["citation_valid"] = float(bool(answer.citations) and not answer.invalid_citations)
        out["support"] = support(text, [h.text for h in cited])
        out["verbatim"] = float(bool(text) and any(normalize_answer(text) in normalize_answer(h.text) for h in cited))
        if answerable:
            out["citation_correct"] = float(any(_matches(h.document_id, row["source"]) for h in cited))
    if answerable and answer.hits:
        ranks = [i for i, h in enumerate(answer.hits, 1) if _matches(h.document_id, row["source"])]
        out["rank"] = ranks[0] if ranks else None
    out["accuracy"] = out["contains"]
    out["score"] = out["accuracy"]
    return out


def quality(examples: list[dict], seed: int, k: int, quotes: bool = False) -> dict:
    """Means with 95% intervals over the examples each metric applies to. With `quotes` (extractive
    generators: the answer is copied from the sources) faithfulness is not reported, since a quote
    is supported by construction; `verbatim` says how many answers are exact copies."""
    def over(key, keep=lambda e: True):
        return metric([e[key] for e in examples if keep(e) and e.get(key) is not None], seed)

    answerable = [e for e in examples if e["answerable"]]
    unanswerable = [e for e in examples if not e["answerable"]]
    abstained = [e for e in examples if e["abstained"]]
    out = {"accuracy": over("accuracy"), "f1": over("f1"), "exact_match": over("exact_match"),
           "contains": over("contains", lambda e: e["answerable"]),
           "answered": metric([0.0 if e["abstained"] else 1.0 for e in answerable], seed),
           "abstention_recall": metric([float(e["abstained"]) for e in unanswerable], seed),
           "abstention_precision": metric([0.0 if e["answerable"] else 1.0 for e in abstained], seed),
           "citation_valid": over("citation_valid"), "citation_correct": over("citation_correct"),
           "verbatim": over("verbatim"), **({} if quotes else {"faithfulness": over("support")})}
    ranked = [e for e in answerable if "rank" in e]
    if ranked:
        out[f"recall_at_{k}"] = metric([float(e["rank"] is not None) for e in ranked], seed)
        out["mrr"] = metric([1 / e["rank"] if e["rank"] else 0.0 for e in ranked], seed)
        # one relevant document per question: nDCG@k = 1 / log2(rank + 1)
        out[f"ndcg_at_{k}"] = metric([1 / math.log2(e["rank"] + 1) if e["rank"] else 0.0 for e in ranked], seed)
    return {key: value for key, value in out.items() if value is not None}


class QARun:
    """The work copy of the documents, its knowledge base, and the answers of each strategy."""

    def __init__(self, data: QAData, project, results: Path, echo: Callable[[str], None] = print, progress: bool = True):
        from ragtune.config import StoreConfig
        from ragtune.project import Project

        self.data, self.results, self.echo, self.progress = data, results, echo, progress
        self.work = results / WORK
        self.docs = self.work / DOCS
        config = project.config.model_copy(deep=True)
        config.store = StoreConfig(path=str((self.work / "store").resolve()))  # always a private embedded store
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        shutil.copytree(data.documents, self.docs)
        self.project = Project(project.folder, config)
        self.index_seconds = self._index()
        self.update_seconds: float | None = None

    def _index(self) -> float:
        started = time.perf_counter()
        self.project.index([str(self.docs)], prune=True, progress=self.progress)
        return time.perf_counter() - started

    def apply_update(self) -> float:
        """Lay the update's files over the copy and re-index incrementally (timed)."""
        started = time.perf_counter()
        shutil.copytree(self.data.update_documents, self.docs, dirs_exist_ok=True)
        self.project.index([str(self.docs)], prune=True, progress=self.progress)
        self.update_seconds = time.perf_counter() - started
        return self.update_seconds

    def answer_all(self, rag, rows: list[dict], mode: str | None, gold_key: str = "answer", store_text: bool = True,
                   label: str = "") -> list[dict]:
        from ragtune.evaluate.progress import progress_bar

        out = []
        if rows:
            rag.ask(rows[0]["question"], mode=mode)  # warm-up: first calls load models; not timed, not scored
        with progress_bar(len(rows), label, enabled=self.progress) as advance:
            for row in rows:
                answer = rag.ask(row["question"], mode=mode)
                scores = score(row, answer, row.get(gold_key) if gold_key != "answer" else None)
                generator = rag.generator
                tokens_in = sum(generator.count_tokens(h.text) for h in answer.hits) + generator.count_tokens(row["question"])
                out.append({"id": row["id"], **({"gold": row.get(gold_key) or ""} if store_text else {}),
                            "prediction": strip_citations(answer.text),
                            **scores, "cited": [c.document_id for c in answer.citations],
                            "latency": answer.timings, "tokens_in": answer.usage.prompt_tokens or tokens_in,
                            "tokens_out": answer.usage.completion_tokens or generator.count_tokens(answer.text),
                            **({"input": row["question"]} if store_text else {})})
                advance()
        return out

    def close(self) -> None:
        self.project.close()


def _reader_rows(data: QAData, rows: list[dict]) -> list[dict]:
    """Reader training examples: question, answer and ~1,200 characters of its source document around
    the first occurrence of the answer (what a retrieved chunk looks like to the reader)."""
    from ragtune.config import IngestConfig
    from ragtune.knowledge.readers import read_file

    texts: dict[str, str] = {}
    out = []
    for row in rows:
        if row["source"] not in texts:
            documents = [d for d in read_file(data.documents / row["source"], row["source"], IngestConfig())
                         if not isinstance(d, Exception)]
            texts[row["source"]] = "\n\n".join(d.text for d in documents)
        text = texts[row["source"]]
        at = text.lower().find(row["answer"].lower())
        if at < 0:
            continue  # the answer is not verbatim in its source: no span to learn
        start = max(0, text.rfind("\n", 0, max(0, at - 600)) + 1)
        context = text[start:at + len(row["answer"]) + 600]
        out.append({"question": row["question"], "answer": text[at:at + len(row["answer"])], "context": context,
                    "answer_start": at - start})
    return out


def run_qa(data: QAData, project, compare, results: Path, strategies: list[str], *, progress: bool = True,
           echo: Callable[[str], None] = print, general: Path | None = None) -> list[dict]:
    """Run each strategy, write nothing (the caller writes), return the records."""
    from ragtune.rag import RAG

    config = project.config
    known = qa_strategies(compare)
    echo(f"  indexing {data.documents} (a private copy in {results / WORK}, embedded store)")
    run = QARun(data, project, results, echo, progress)
    plan: dict[str, tuple[object, str | None]] = {}  # strategy -> (RAG, retrieval mode)
    records: dict[str, dict] = {}
    one_time: dict[str, dict] = {}
    tuned: dict[str, tuple] = {}  # 'finetune' / 'raft' -> (adapter folder, training seconds, generator)
    models: dict[str, str] = {}
    from ragtune.errors import RagtuneError

    for strategy in strategies:
        family, description = known[strategy]
        reason = _skip_reason(strategy, config, compare)
        if reason:
            records[strategy] = skipped(strategy, family, "qa", reason, description)
            continue
        try:
            _plan_one(strategy, run, data, compare, plan, one_time, tuned, models, progress, echo)
        except RagtuneError as exc:
            echo(f"  {strategy} failed: {exc}")
            records[strategy] = {**skipped(strategy, family, "qa", str(exc), description), "status": "failed"}
    answers, before = {}, {}

    def fail(strategy: str, exc: Exception) -> None:
        echo(f"  {strategy} failed: {exc}")
        family, description = known[strategy]
        records[strategy] = {**skipped(strategy, family, "qa", str(exc), description), "status": "failed"}
        plan.pop(strategy, None)

    for strategy, (rag, mode) in list(plan.items()):
        echo(f"- {strategy}: {known[strategy][1]}")
        try:
            answers[strategy] = run.answer_all(rag, data.test, mode, store_text=compare.store_text, label=strategy)
            if data.update_questions:
                before[strategy] = run.answer_all(rag, data.update_questions, mode, store_text=False,
                                                  label="  before the update")
        except RagtuneError as exc:
            fail(strategy, exc)
    after, retrain_seconds = {}, {}
    if data.update_questions and plan:
        echo(f"  applying the update: {data.update_documents} over the copy, re-indexing")
        run.apply_update()
        for strategy, (rag, mode) in list(plan.items()):
            try:
                if strategy == "finetune":  # closed-book knowledge lives in the weights: retrain on the new documents
                    from ragtune.evaluate.qa_finetune import train_generator, tuned_generator

                    adapter, retrain_seconds[strategy] = train_generator(run, data, compare, "finetune",
                                                                         progress=progress, echo=echo, name="finetune-update")
                    rag = ClosedBook(run.project, tuned_generator(run.project, adapter))
                after[strategy] = run.answer_all(rag, data.update_questions, mode, store_text=False,
                                                 label=f"  {strategy} after")
            except RagtuneError as exc:
                fail(strategy, exc)
    reader_folder = models.get("rag+reader")
    forgetting: dict[str, dict] = {}
    out = []
    for strategy in strategies:
        if strategy in records:
            out.append(records[strategy])
            continue
        family, description = known[strategy]
        examples = answers[strategy]
        generator = plan[strategy][0].generator
        settings = {"strategy": strategy, "mode": plan[strategy][1],
                    "k": getattr(plan[strategy][0], "k", None) or config.rag.k, "generator": generator.name,
                    "embedder": config.embedder.model_dump(), "retrieval": config.retrieval.model_dump(),
                    "rag": config.rag.model_dump(), **({"reader": reader_folder} if strategy == "rag+reader" else {}),
                    **({"epochs": compare.epochs, "reader_min_score": getattr(run, "reader_min_score", None),
                       "reader_calibration": getattr(run, "reader_calibration", None)} if strategy == "rag+reader" else {})}
        split = data.split if strategy != "finetune" and strategy != "finetune+rag" else (
            "trained on the text of every document (test documents included: closed-book knowledge has to be in "
            "the weights), cloze questions about their facts and the training questions; tested on the held-out "
            "documents' questions, phrasings never seen in training")
        record = base_record(strategy, family, "qa", description, split=split, config=settings, seed=compare.seed,
                             data=data.files, models={"embedder": config.embedder.model, "generator": config.generator.model})
        prices = compare.constraints
        tokens = {"in_mean": _mean(e["tokens_in"] for e in examples), "out_mean": _mean(e["tokens_out"] for e in examples)}
        seconds_mean = _mean(e["latency"].get("total", 0.0) for e in examples)
        record.update(primary_metric="accuracy", examples=[{k: v for k, v in e.items() if k != "latency"} | {"latency_ms": {
            s: round(t * 1000, 2) for s, t in e["latency"].items()}} for e in examples],
                      metrics=quality(examples, compare.seed, settings["k"],
                                      quotes=generator.name in ("extractive", "reader")),
                      latency_ms=latency_by_stage([e["latency"] for e in examples]), tokens=tokens,
                      cost_per_1k_queries=1000 * ((tokens["in_mean"] + tokens["out_mean"]) / 1000 * prices.price_per_1k_tokens
                                                  + seconds_mean / 3600 * prices.price_per_gpu_hour),
                      one_time=one_time[strategy],
                      answer_kind="quote" if generator.name in ("extractive", "reader") else "generated")
        if strategy == "rag+reader":
            record["model_folder"] = reader_folder
        elif strategy in models:
            record["model_folder"] = models[strategy]
            if general:
                kind = "raft" if strategy == "raft" else "finetune"
                if kind not in forgetting:
                    echo(f"  forgetting: {general} closed-book, base vs {kind}")
                    forgetting[kind] = _forgetting(run.project, tuned[kind][2], general, compare.seed)
                record["forgetting"] = forgetting[kind]
        if strategy in before:
            record["freshness"] = _freshness(before[strategy], after.get(strategy, []), data,
                                             retrain_seconds.get(strategy, run.update_seconds), strategy, compare.seed)
        out.append(record)
    run.close()
    return out


def general_questions(path: Path) -> list[dict]:
    """A general-ability set for a generator: JSONL rows with question and answer."""
    import json

    from ragtune.errors import InputError

    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise InputError(f"{path}:{number}: not valid JSON") from None
        if not isinstance(row, dict) or not row.get("question") or not row.get("answer"):
            raise InputError(f"{path}:{number}: a general qa row needs 'question' and 'answer'")
        rows.append({"id": str(row.get("id", number)), "question": str(row["question"]), "answer": str(row["answer"]),
                     "answerable": True, "source": None})
    return rows


def _forgetting(project, tuned, general: Path, seed: int) -> dict:
    """Closed-book accuracy on the general set: the base generator vs the tuned one."""
    rows = general_questions(general)

    def accuracy(book: ClosedBook) -> dict:
        return metric([score(row, book.ask(row["question"]))["accuracy"] for row in rows], seed)

    return {"set": str(general), "metric": "accuracy (closed-book)", "before": accuracy(ClosedBook(project)),
            "after": accuracy(ClosedBook(project, tuned)),
            "note": "the base generator vs the LoRA-tuned one, both without sources"}


def rag_variant(strategy: str) -> tuple[str, int | None]:
    """('hybrid', 3) for 'rag-hybrid@k3'; ('bm25', None) for 'rag-bm25' (k from rag.k)."""
    base, _, k = strategy.partition("@k")
    return base.split("-")[1].split("+")[0], int(k) if k else None


class _WithK:
    """A RAG pipeline answering with a fixed number of sources (the rag-hybrid@k<N> variants)."""

    def __init__(self, rag, k: int):
        self.rag, self.k = rag, k

    @property
    def generator(self):
        return self.rag.generator

    def ask(self, question: str, mode=None):
        return self.rag.ask(question, mode=mode, k=self.k)


def _plan_one(strategy, run, data, compare, plan, one_time, tuned, models, progress, echo) -> None:
    """Build what `strategy` answers with (training it if it learns) into plan[strategy]."""
    from ragtune.rag import RAG

    if strategy.startswith("rag-"):
        mode, k = rag_variant(strategy)
        rag = RAG(run.project, reranker=None if "+rerank" in strategy else False)  # plain variants never rerank
        plan[strategy] = (_WithK(rag, k) if k else rag, mode)
        one_time[strategy] = {"index_seconds": run.index_seconds}
    elif strategy == "closed-book":
        plan[strategy] = (ClosedBook(run.project), None)
        one_time[strategy] = {}
    elif strategy in ("finetune", "finetune+rag", "raft"):
        from ragtune.evaluate.qa_finetune import train_generator, tuned_generator

        kind = "raft" if strategy == "raft" else "finetune"
        if kind not in tuned:  # one adapter (and one loaded model) serves finetune and finetune+rag
            adapter, seconds = train_generator(run, data, compare, kind, progress=progress, echo=echo)
            tuned[kind] = (adapter, seconds, tuned_generator(run.project, adapter))
        adapter, seconds, generator = tuned[kind]
        if strategy == "finetune":
            plan[strategy] = (ClosedBook(run.project, generator), None)
        else:
            rag = RAG(run.project, generator=generator, reranker=False)
            plan[strategy] = (rag, "hybrid")
        one_time[strategy] = {"training_seconds": seconds,
                              **({"index_seconds": run.index_seconds} if strategy != "finetune" else {})}
        models[strategy] = str(adapter)
    elif strategy == "rag+reader":
        rag, seconds, folder = _train_reader(run, data, compare, progress, echo)
        plan[strategy] = (rag, "hybrid")
        one_time[strategy] = {"index_seconds": run.index_seconds, "training_seconds": seconds}
        models[strategy] = str(folder)


def _freshness(before: list[dict], after: list[dict], data: QAData, seconds: float | None, strategy: str, seed: int) -> dict:
    stale = [e for e in before if not e["abstained"] and _said_old(e, data)]
    how = {"closed-book": "nothing: reads no documents",
           "finetune": "retrain on the updated documents"}.get(strategy, "re-index the changed files")
    return {"update": f"{len({p.name for p in data.update_documents.rglob('*') if p.is_file()})} changed or new documents, "
                      f"{len(data.update_questions)} questions about them",
            "absorb": how, "absorb_seconds": seconds if strategy != "closed-book" else None, "metric": "accuracy",
            "before": metric([e["accuracy"] for e in before], seed),
            "after": metric([e["accuracy"] for e in after], seed) if after else None,
            "f1_before": metric([e["f1"] for e in before], seed),
            "f1_after": metric([e["f1"] for e in after], seed) if after else None,
            "stale_answers_before": len(stale),
            "examples": [{"id": b["id"], "before": b["prediction"], "after": a["prediction"]}
                         for b, a in zip(before, after)]}


def _said_old(example: dict, data: QAData) -> bool:
    old = next((q.get("before") for q in data.update_questions if q["id"] == example["id"]), None)
    return bool(old) and normalize_answer(old) in normalize_answer(example["prediction"])


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _skip_reason(strategy: str, config, compare) -> str | None:
    backend = config.generator.backend
    if strategy == "rag+reader" and not compare.reader_model and config.embedder.backend == "hashing":
        return "needs an encoder to fine-tune as the reader: set compare.reader_model (the hashing embedder has no weights)"
    if strategy == "closed-book" and backend not in GENERATIVE:
        return (f"needs a generative model (generator.backend hf or openai); the '{backend}' generator can only "
                "quote retrieved sources")
    if strategy == "rag-hybrid+rerank" and not config.rag.rerank.model:
        return "no reranker configured (rag.rerank.model: train one with `ragtune train reranker`)"
    if strategy in ("finetune", "finetune+rag", "raft") and (backend != "hf" or not config.generator.model):
        return (f"needs a local generative model to fine-tune (generator.backend: hf with generator.model); "
                f"the generator is '{backend}'")
    return None




class ClosedBook:
    """The generator answering from the question alone (no retrieval): the prompt-only baseline."""

    def __init__(self, project, generator=None):
        from ragtune.registry import create

        self.project = project
        g = project.config.generator
        self.generator = generator or create("generator", g.backend, g, embedder=project.embedder)

    def ask(self, question: str, mode=None):
        from ragtune.generate.base import Prompt
        from ragtune.generate.prompts import declined
        from ragtune.types import Answer

        started = time.perf_counter()
        messages = [{"role": "system", "content": "Answer the question briefly. If you do not know, say \"I don't know\"."},
                    {"role": "user", "content": question}]
        generation = self.generator.generate(Prompt(question, [], messages))
        seconds = time.perf_counter() - started
        abstained = generation.abstained or declined(generation.text)
        return Answer(question, generation.text, [], [], abstained=abstained, usage=generation.usage,
                      timings={"generate": seconds, "total": seconds}, generator=self.generator.name)


def _positions(model: str) -> int:
    """Longest input the model reads (its position embeddings)."""
    from transformers import AutoConfig

    from ragtune.knowledge.embedders import resolve_model_path

    config = AutoConfig.from_pretrained(str(resolve_model_path(model, setting="compare.reader_model")))
    return int(getattr(config, "max_position_embeddings", 512) or 512)


def _train_reader(run: QARun, data: QAData, compare, progress: bool, echo):
    from ragtune.config import GeneratorConfig
    from ragtune.rag import RAG
    from ragtune.registry import create
    from ragtune.train.common import TrainOptions
    from ragtune.train.reader import train_reader

    answerable_validation = [r for r in data.validation if r["answerable"]]
    train_rows, validation_rows = _reader_rows(data, data.train), _reader_rows(data, answerable_validation)
    folder = run.results / "models" / "reader"
    shutil.rmtree(folder, ignore_errors=True)  # a new comparison trains from scratch, never resumes an old run
    base = compare.reader_model or run.project.config.embedder.model
    echo(f"  training the reader from {base} on {len(train_rows)} questions ({compare.epochs:g} epochs)")
    options = TrainOptions(output_dir=str(folder), epochs=compare.epochs, learning_rate=compare.reader_learning_rate,
                           seed=compare.seed, batch_size=16, logging_steps=5, save_total_limit=1)
    window = min(256, _positions(base))
    started = time.perf_counter()
    train_reader(train_rows, validation_rows or None, model=base, options=options, max_length=window,
                 stride=window * 3 // 8, progress=progress)
    generator = create("generator", "reader", GeneratorConfig(backend="reader", model=str(folder), min_score=0.0),
                       embedder=run.project.embedder)
    rag = RAG(run.project, generator=generator, reranker=False)
    threshold = compare.reader_min_score
    if threshold is None:
        threshold, table = calibrate_reader(rag, data.validation)
        run.reader_calibration = table
        echo(f"  reader abstention threshold {threshold:g}, calibrated on {len(data.validation)} validation questions")
    generator.config = generator.config.model_copy(update={"min_score": threshold})
    run.reader_min_score = threshold
    seconds = time.perf_counter() - started
    return rag, seconds, folder


THRESHOLDS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


def calibrate_reader(rag, questions: list[dict]) -> tuple[float, dict]:
    """The reader's abstention threshold with the best accuracy on `questions` (validation: answer
    contains the gold when the span's probability reaches the threshold; an unanswerable question
    is right when it does not). Ties go to the lower threshold. Returns it and accuracy per threshold."""
    if not questions:
        return 0.0, {}
    outcomes = []  # (confidence, right when answered, answerable)
    for row in questions:
        hits = rag.project.search(row["question"], mode="hybrid", k=rag.config.rag.k)
        generation = rag.generator.generate(rag.prompt(row["question"], hits))
        text = strip_citations(generation.text)
        right = row["answerable"] and any(normalize_answer(g) in normalize_answer(text) for g in row.get("answers") or [row["answer"]])
        outcomes.append((generation.confidence or 0.0, right, row["answerable"]))
    table = {t: sum((conf >= t and right) if answerable else conf < t for conf, right, answerable in outcomes) / len(outcomes)
             for t in THRESHOLDS}
    best = max(THRESHOLDS, key=lambda t: (table[t], -t))
    return best, table
