"""The qa strategies that fine-tune the project's generative model (generator.backend: hf), with
LoRA through `ragtune.train.sft`:

- `finetune`: closed-book. Knowledge injection as Ovadia et al. (2023) set it up: the model is
  tuned on the text of **every** document (so the facts behind the test questions are in its
  training data), on cloze questions about every fact in several phrasings (`compare.synth_per_fact`,
  made by `ragtune data synth`), and on the training questions with their answers (other documents'
  questions, which teach it the answer format); it is then asked the held-out questions, phrasings
  it never saw, without sources.
- `finetune+rag`: the same adapter, answering from retrieved sources.
- `raft`: RAFT (Zhang et al., 2024): each training question comes with the RAG prompt the model will
  see, its source chunk plus distractor chunks from other documents (for 20% of questions the source
  chunk is left out and the target is the abstention), and the target answer cites the source [n].

The training data is built with the same prompt builder as inference, so the model is tuned on
exactly what it will read.
"""
from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

from ragtune.evaluate.datasets import QAData

CLOSED_BOOK_SYSTEM = "Answer the question briefly. If you do not know, say \"I don't know\"."
ORACLE_SHARE = 0.8  # RAFT's P: share of training questions whose source chunk is among the sources
DISTRACTORS = 3


def _document_rows(run, max_chars: int = 1500) -> list[dict]:
    """The documents as training text: one row per chunk-sized piece, prompted by its title."""
    from ragtune.config import IngestConfig
    from ragtune.knowledge.readers import read_file

    rows = []
    for path in sorted(p for p in run.docs.rglob("*") if p.is_file()):
        for document in read_file(path, path.name, IngestConfig()):
            if isinstance(document, Exception):
                continue
            text = document.text
            for start in range(0, len(text), max_chars):
                rows.append({"messages": [{"role": "user", "content": f"Tell me what the document "
                                                                      f"\"{document.title or path.name}\" says."},
                                          {"role": "assistant", "content": text[start:start + max_chars]}]})
    return rows


def _synth_rows(run, compare) -> list[dict]:
    """Cloze questions about every fact of every document (Ovadia et al.: fine-tuning absorbs a fact
    when it sees it phrased several ways); the test questions themselves are never among them."""
    from ragtune.train.synth import synthesize

    if not compare.synth_per_fact:
        return []
    rows = synthesize([run.docs], method="cloze", per_fact=compare.synth_per_fact, max_facts=compare.synth_max_facts,
                      seed=compare.seed, progress=False)
    return _qa_rows([{"question": r["question"], "answer": r["answer"]} for r in rows])


def _qa_rows(questions: list[dict]) -> list[dict]:
    return [{"messages": [{"role": "system", "content": CLOSED_BOOK_SYSTEM}, {"role": "user", "content": q["question"]},
                          {"role": "assistant", "content": q["answer"]}]} for q in questions]


def _raft_rows(run, questions: list[dict], generator, rag_config, seed: int) -> list[dict]:
    from ragtune.evaluate.qa_run import _matches
    from ragtune.generate.prompts import build_prompt
    from ragtune.rag import NO_ANSWER

    rng = random.Random(seed)
    rows = []
    for q in questions:
        hits = run.project.search(q["question"], mode="hybrid", k=20)
        oracle = next((h for h in hits if _matches(h.document_id, q["source"]) and
                       q["answer"].lower() in h.text.lower()), None)
        distractors = [h for h in hits if not _matches(h.document_id, q["source"])][:DISTRACTORS]
        if oracle is None or not distractors:
            continue
        with_oracle = rng.random() < ORACLE_SHARE
        sources = distractors + ([oracle] if with_oracle else [])
        rng.shuffle(sources)
        prompt = build_prompt(q["question"], sources, generator, rag_config)
        n = next((i for i, h in enumerate(prompt.sources, 1) if h.chunk_id == oracle.chunk_id), None)
        target = f"{q['answer']} [{n}]" if with_oracle and n else NO_ANSWER
        rows.append({"messages": [*prompt.messages, {"role": "assistant", "content": target}]})
    return rows


def train_generator(run, data: QAData, compare, kind: str, *, progress: bool, echo, name: str | None = None
                    ) -> tuple[Path, float]:
    """LoRA-tune the project's generator for `kind` ('finetune' or 'raft'); (adapter folder, seconds)."""
    from ragtune.errors import ConfigError
    from ragtune.registry import create
    from ragtune.train.common import TrainOptions
    from ragtune.train.sft import train_sft

    config = run.project.config
    generator = create("generator", "hf", config.generator)
    if kind == "finetune":
        rows = _document_rows(run) + _synth_rows(run, compare) + _qa_rows(data.train)
    else:
        rows = _raft_rows(run, data.train, generator, config.rag, compare.seed)
    max_length = compare.generator_max_length or min(generator.context_window, 2048)
    if not rows:
        raise ConfigError(f"{kind}: no training examples could be built from the training questions")
    folder = run.results / "models" / f"generator-{name or kind}"
    shutil.rmtree(folder, ignore_errors=True)  # a new comparison trains from scratch, never resumes an old run
    echo(f"  LoRA-tuning {config.generator.model} for {kind} on {len(rows)} examples ({compare.epochs:g} epochs)")
    options = TrainOptions(output_dir=str(folder), epochs=compare.epochs, learning_rate=compare.generator_learning_rate,
                           seed=compare.seed, batch_size=4, max_length=max_length, logging_steps=5,
                           save_total_limit=1)
    started = time.perf_counter()
    train_sft(rows, None, model=config.generator.model, mode="lora", options=options, progress=progress)
    return folder, time.perf_counter() - started


def tuned_generator(project, adapter: Path):
    """The project's hf generator with the trained LoRA adapter on top."""
    from ragtune.registry import create

    settings = project.config.generator.model_copy(update={"adapter": str(adapter)})
    return create("generator", "hf", settings, embedder=project.embedder)
