"""`ragtune train embedder | reranker | reader` end to end on a tiny BERT: each trains, learns,
reloads with its own library and plugs into a project through the normal code path."""
from __future__ import annotations

import json
import re
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from ragtune.config import EmbedderConfig, GeneratorConfig, ProjectConfig, RerankConfig
from ragtune.errors import ConfigError, EmbedderMismatchError, InputError
from ragtune.generate.base import Prompt
from ragtune.project import Project
from ragtune.rag import RAG
from ragtune.registry import create
from ragtune.train.common import MARKER, TrainOptions, read_log
from ragtune.train.embedder import train_embedder
from ragtune.evaluate.metrics import exact_match, f1_score, normalize_answer, squad_metrics
from ragtune.train.reader import answer_positions, read_spans, train_reader
from ragtune.train.reranker import query_groups, train_reranker
from ragtune.types import Hit
from tests.conftest import write_docs
from tests.tiny_encoders import SENTENCES, tiny_bert, toy_pairs, toy_qa, write_jsonl  # noqa: F401  (fixture)
from tests.tiny_generators import one_torch_thread  # noqa: F401  (fixture)


def fast(out: Path, **changes) -> TrainOptions:
    """Options for seconds-long runs on the toy data (48 rows, batch 8: 6 steps per epoch)."""
    values = dict(output_dir=str(out), batch_size=8, learning_rate=5e-3, warmup_ratio=0.0, max_steps=12,
                  eval_steps=6, logging_steps=2, max_length=32)
    return TrainOptions(**{**values, **changes})


def losses(out: Path) -> list[float]:
    return [event["loss"] for event in read_log(out / "train_log.jsonl") if "loss" in event]


def assert_loss_goes_down(out: Path) -> None:
    found = losses(out)
    assert len(found) >= 4 and np.mean(found[-2:]) < found[0], found


def assert_run_files(out: Path, base_model: Path) -> None:
    """Model card naming the base model and the training file's sha256, loss curve, complete checkpoints."""
    card = (out / "README.md").read_text()
    run = json.loads((out / "ragtune_run.json").read_text())
    assert str(base_model) in card and run["data"]["train"]["sha256"] in card
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    checkpoints = list((out / "checkpoints").glob("checkpoint-*"))
    assert checkpoints and all((c / MARKER).is_file() for c in checkpoints)


def hit(n: int, text: str) -> Hit:
    return Hit(chunk_id=f"d{n}.txt#0", document_id=f"d{n}.txt", score=1.0 / n, text=text, source=f"d{n}.txt",
               title=None, section=None, page=None, metadata={})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Toy pairs (48 train, 12 validation, disjoint) and toy QA, as JSONL; the QA training file
    also holds two SQuAD v2 rows without an answer."""
    folder = tmp_path_factory.mktemp("encoder-data")
    no_answer = {"text": [], "answer_start": []}
    unanswerable = [{"question": "dogs bark at", "context": "the cat sat on the mat.", "answers": no_answer},
                    {"question": "vault encryption uses a key", "context": "webhooks are signed with a secret.",
                     "answers": no_answer}]
    return {"pairs": write_jsonl(folder / "pairs.jsonl", toy_pairs(48)),
            "pairs_dev": write_jsonl(folder / "pairs_dev.jsonl", toy_pairs(12, offset=48)),
            "qa": write_jsonl(folder / "qa.jsonl", toy_qa(46, seed=1) + unanswerable),
            "qa_dev": write_jsonl(folder / "qa_dev.jsonl", toy_qa(12, seed=2))}


@pytest.fixture(scope="module")
def kb_folder(tmp_path_factory) -> Path:
    """A project of the nine corpus sentences, one document each, indexed on the hashing embedder."""
    folder = tmp_path_factory.mktemp("kb")
    (folder / "ragtune.yaml").write_text("embedder: {backend: hashing, dimension: 256}\n")
    write_docs(folder / "docs", {f"doc{i}.txt": f"{s}.\n" for i, s in enumerate(SENTENCES)})
    project = Project.open(folder)
    project.index([str(folder / "docs")], progress=False)
    project.close()
    return folder


@pytest.fixture
def kb(kb_folder):
    """The indexed project with its own config (tests change it freely); answers never abstain on retrieval."""
    project = Project.open(kb_folder)
    project.config.rag.min_relevance = -1
    yield project
    project.close()


# ---------------------------------------------------------------- embedder


@pytest.fixture(scope="module")
def embedder_run(tiny_bert, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("embedder") / "model"
    return train_embedder(data["pairs"], data["pairs_dev"], model=str(tiny_bert), options=fast(out),
                          corpus=SENTENCES, distractors=20, progress=False)


def test_embedder_trains_reports_and_reloads(embedder_run, tiny_bert):
    from sentence_transformers import SentenceTransformer

    out = embedder_run.output_dir
    assert_loss_goes_down(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(embedder_run.metrics, default=str))
    for name in ("validation_before", "validation"):
        assert set(metrics[name]) >= {"ndcg@10", "mrr@10", "accuracy@1"}
        assert all(0 <= metrics[name][k] <= 1 for k in ("ndcg@10", "mrr@10", "accuracy@1"))
    # 12 held-out positives plus 20 of the distractors (other pairs' texts and the corpus sentences)
    assert metrics["validation"]["n"] == 12 and metrics["validation"]["corpus"] == 32
    assert metrics["validation"]["ndcg@10"] > metrics["validation_before"]["ndcg@10"] + 0.2  # it learned the toy task
    best = Path(metrics["train"]["best_checkpoint"]).name
    assert metrics["train"]["global_step"] == 12 and (out / "checkpoints" / best / MARKER).is_file()
    assert_run_files(out, tiny_bert)

    trained, base = SentenceTransformer(str(out)), SentenceTransformer(str(tiny_bert))
    texts = [row["positive"] for row in toy_pairs(3)]
    vectors = trained.encode(texts, normalize_embeddings=True)
    assert vectors.shape == (3, 32) and np.isfinite(vectors).all()
    assert not np.allclose(vectors, base.encode(texts, normalize_embeddings=True), atol=1e-3)  # the weights moved


def test_trained_embedder_becomes_the_project_embedder(embedder_run, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    from ragtune.knowledge.embedders import weights_fingerprint

    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "kb"
    write_docs(folder / "docs", {f"doc{i}.txt": f"{s}.\n" for i, s in enumerate(SENTENCES)})
    config = ProjectConfig(embedder=EmbedderConfig(backend="hashing", dimension=64))
    project = Project(folder, config)
    try:
        project.index([str(folder / "docs")], progress=False)
        # What `embedder: {model: FOLDER}` in ragtune.yaml, then `ragtune index --reembed`, do.
        project.config.embedder = EmbedderConfig(backend="sentence-transformers", model=str(embedder_run.output_dir),
                                                 device="cpu")
        project.__dict__.pop("embedder", None)
        with pytest.raises(EmbedderMismatchError, match="--reembed"):
            project.search("sync daemon port", mode="dense")
        project.index([str(folder / "docs")], reembed=True, progress=False)
        stored = project.store().embedder_info()
        assert stored["fingerprint"] == weights_fingerprint(embedder_run.output_dir) and stored["dimension"] == 32

        rows = project.store().conn.execute("SELECT header, text, vector FROM chunks").fetchall()
        assert len(rows) == len(SENTENCES)
        reference = SentenceTransformer(str(embedder_run.output_dir)).encode(
            [f"{h}\n{t}" if h else t for h, t, _ in rows], normalize_embeddings=True)
        assert np.allclose(np.stack([np.frombuffer(v, dtype=np.float32) for _, _, v in rows]), reference, atol=1e-5)
        hits = project.search("sync daemon port", mode="dense", k=3)
        assert len(hits) == 3 and all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    finally:
        project.close()


# ---------------------------------------------------------------- reranker


def test_query_groups_take_own_then_mined_then_pool_negatives():
    rows = [{"query": "q1", "positive": "p1", "negative": "own1"},
            {"query": "q2", "positive": "p2", "negative": ["own2a", "own2b"]},
            {"query": "q3", "positive": "p3"},
            {"query": "q4", "positive": "p4", "negative": "own4"}]
    mined = {"q1": ["p1", "own1", "m1a", "m1b", "m1c"], "q2": ["m2a"], "q3": ["p3"], "q4": ["m4", "p4"]}
    pool = ["p1", "p2", "p3", "p4", "x1", "x2", "x3", "x4"]
    groups = query_groups(rows, negatives_per_query=3, mine_from=mined.__getitem__, fill_from=pool, seed=0)
    assert [(g["query"], g["positive"]) for g in groups] == [(f"q{i}", [f"p{i}"]) for i in range(1, 5)]
    assert groups[0]["negative"] == ["own1", "m1a", "m1b"]  # own first; the positive and a repeat are skipped
    assert groups[1]["negative"] == ["own2a", "own2b", "m2a"]
    filled = groups[2]["negative"]  # mining found only the positive: three distinct fill-ups from the pool
    assert len(filled) == 3 == len(set(filled)) and "p3" not in filled and set(filled) <= set(pool)
    own, first_mined, fill = groups[3]["negative"]  # own, mined, then one fill-up from the pool
    assert (own, first_mined) == ("own4", "m4") and fill in set(pool) - {"p4"}
    assert query_groups(rows, negatives_per_query=3, mine_from=mined.__getitem__, fill_from=pool, seed=0) == groups
    without = query_groups(rows[2:], negatives_per_query=2, mine_from=None, fill_from=["p3"], seed=0)
    assert without[0]["negative"] == []  # nothing but the positive to fill from


def _mine(query: str) -> list[str]:
    """What the fake knowledge-base search returns for `query`: the query's own positive (which must
    be skipped), then two texts of a shape no pairs file has (two sentences, no "and" between)."""
    a = sum(map(ord, query)) % len(SENTENCES)
    b, c = (a + 1) % len(SENTENCES), (a + 2) % len(SENTENCES)
    positive = next(row["positive"] for row in toy_pairs(60) if row["query"] == query)
    return [positive, f"{SENTENCES[a]} {SENTENCES[b]}", f"{SENTENCES[b]} {SENTENCES[c]}"]


def _reranker_run(tiny_bert, data, tmp_path_factory, loss):
    """A reranker trained with `_mine` as its miner and `loss`; records the queries it mined for and
    the training groups (query, positive, negatives) its examples were made from."""
    import ragtune.train.reranker as reranker_module

    asked, calls = [], []
    query_groups_of = reranker_module.query_groups

    def mine(query: str) -> list[str]:
        asked.append(query)
        return _mine(query)

    def spy(rows, **kwargs):
        calls.append(query_groups_of(rows, **kwargs))
        return calls[-1]

    out = tmp_path_factory.mktemp(f"reranker-{loss}") / "model"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reranker_module, "query_groups", spy)
        # Listwise: a softmax over 6 candidates moves slowly on the toy; 24 steps show the fall.
        options = fast(out, max_steps=24, eval_steps=12, logging_steps=4) if loss == "listwise" else fast(out)
        result = train_reranker(data["pairs"], data["pairs_dev"], model=str(tiny_bert), options=options,
                                negatives_per_query=3, mine_from=mine, loss=loss, progress=False)
    return SimpleNamespace(result=result, asked=asked, groups=calls[0])


@pytest.fixture(scope="module")
def reranker_run(tiny_bert, data, tmp_path_factory):
    return _reranker_run(tiny_bert, data, tmp_path_factory, "listwise")


def test_reranker_trains_on_mined_negatives_and_reloads(reranker_run, tiny_bert):
    from sentence_transformers import CrossEncoder

    out, metrics = reranker_run.result.output_dir, reranker_run.result.metrics
    assert sorted(reranker_run.asked) == sorted(row["query"] for row in toy_pairs(60))  # train and validation
    by_query = {row["query"]: row for row in toy_pairs(48)}
    assert [group["query"] for group in reranker_run.groups] == list(by_query)
    for group in reranker_run.groups:  # what was trained on: own negative, then the two mined texts
        row = by_query[group["query"]]
        assert group["positive"] == [row["positive"]]
        assert group["negative"] == [row["negative"], *_mine(row["query"])[1:]]
    assert metrics["train"]["pairs"] == 48 * 4
    assert json.loads((out / "ragtune_run.json").read_text())["mined"] is True
    assert_loss_goes_down(out)
    assert metrics["validation"]["mrr@10"] > metrics["validation_before"]["mrr@10"] + 0.05
    for name in ("validation_before", "validation"):
        assert all(0 <= metrics[name][k] <= 1 for k in ("mrr@10", "ndcg@10", "map"))
    assert metrics["validation"]["n"] == 12 and json.loads((out / "metrics.json").read_text())["validation"]["n"] == 12
    assert_run_files(out, tiny_bert)

    pairs = [(row["query"], row["positive"]) for row in toy_pairs(4)]
    scores = CrossEncoder(str(out)).predict(pairs)
    assert scores.shape == (4,) and np.isfinite(scores).all()
    assert json.loads((out / "ragtune_run.json").read_text())["loss"] == "listwise"
    assert reranker_run.result.new_head  # the tiny BERT is an encoder without a scoring head
    assert f"rerank: {{model: {out}, first_stage_weight: 0.6}}" in (out / "README.md").read_text()


def test_reranker_bce_loss_trains_on_labelled_pairs(tiny_bert, data, tmp_path_factory):
    run = _reranker_run(tiny_bert, data, tmp_path_factory, "bce")
    out = run.result.output_dir
    assert json.loads((out / "ragtune_run.json").read_text())["loss"] == "bce"
    assert "binary cross-entropy" in (out / "README.md").read_text()
    assert_loss_goes_down(out)
    assert run.result.metrics["train"]["pairs"] == 48 * 4


def test_listwise_columns_keep_the_smallest_negative_count():
    from ragtune.train.reranker import _listwise_columns

    columns = _listwise_columns([{"query": "q1", "positive": ["p1"], "negative": ["a", "b", "c"]},
                                 {"query": "q2", "positive": ["p2"], "negative": ["d", "e"]}])
    assert columns == {"query": ["q1", "q2"], "positive": ["p1", "p2"], "negative_1": ["a", "d"],
                       "negative_2": ["b", "e"]}


def test_reranker_rejects_an_unknown_loss(tiny_bert, data, tmp_path):
    from ragtune.errors import InputError

    with pytest.raises(InputError, match="unknown reranker loss 'hinge'"):
        train_reranker(data["pairs"], model=str(tiny_bert), options=fast(tmp_path / "rr"), loss="hinge")
    assert not (tmp_path / "rr").exists()


def test_trained_reranker_reorders_rag_sources(reranker_run, kb):
    import torch
    from sentence_transformers import CrossEncoder

    out = reranker_run.result.output_dir
    kb.config.rag.rerank = RerankConfig(model=str(out), top_n=9)
    rag = RAG(kb)
    answer = rag.ask("sync daemon listens on port", k=4)
    assert len(answer.hits) == 4 and answer.timings["rerank"] > 0
    reference = CrossEncoder(str(out)).predict([(answer.retrieval_query, h.text) for h in kb.search(
        "sync daemon listens on port", k=9)], activation_fn=torch.nn.Identity())
    assert [h.score for h in answer.hits] == pytest.approx(sorted(reference, reverse=True)[:4], rel=1e-4)


# ---------------------------------------------------------------- reader: metrics and windows


def test_squad_metrics_match_hand_computed_values():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("An apple a day") == "apple day"
    assert exact_match("the Cat.", "cat") == 1.0 and exact_match("cat", "cats") == 0.0
    # "cat sat" against "cat sat on mat": precision 2/2, recall 2/4, F1 2/3
    assert f1_score("the cat sat", "a cat sat on the mat") == pytest.approx(2 / 3)
    assert f1_score("port 7741 7741", "7741") == pytest.approx(0.5)  # precision 1/3, recall 1
    assert f1_score("", "7741") == 0.0 and f1_score("the", "a") == 1.0  # both empty after normalising
    assert squad_metrics(["7741", "the cat sat"], ["7741", "a cat sat on the mat"]) == pytest.approx(
        {"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2, "n": 2})


def test_answer_positions_in_a_window():
    # [CLS] question [SEP] "port" "7741" "daily" [SEP] [PAD]: context offsets 20-24, 25-29, 30-35
    offsets = [None, None, None, (20, 24), (25, 29), (30, 35), None, None]
    assert answer_positions(offsets, 25, 29) == (4, 4)
    assert answer_positions(offsets, 20, 29) == (3, 4)
    assert answer_positions(offsets, 26, 28) == (4, 4)  # inside one token
    assert answer_positions(offsets, 40, 44) == (0, 0)  # after the window
    assert answer_positions(offsets, 10, 24) == (0, 0)  # starts before the window
    assert answer_positions(offsets, 30, 40) == (0, 0)  # runs past the window
    assert answer_positions(offsets, 25, 25) == (0, 0)  # no answer (SQuAD v2: empty answer text)
    assert answer_positions([None, (0, 4), (5, 9), None], 0, 0) == (0, 0)
    assert answer_positions([None, None], 0, 4) == (0, 0)  # no context in the window


class _PointAt:
    """A fake QA model (same call shape as transformers') whose start and end logits peak on one token id."""

    def __init__(self, token_id: int):
        import torch

        self.token_id, self.weight = token_id, torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return iter([self.weight])

    def __call__(self, input_ids, **kwargs):
        logits = (input_ids == self.token_id).float() * 20.0
        return SimpleNamespace(start_logits=logits, end_logits=logits)


def test_read_spans_finds_the_span_in_a_later_window(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    filler = ". ".join(SENTENCES[1:6])  # ~40 tokens before the answer: several 24-token windows
    long = f"{filler}. the sync daemon listens on port 7741. dogs bark at night."
    without = "the cat sat on the mat. vault encryption uses a master key."
    model = _PointAt(tokenizer.convert_tokens_to_ids("7741"))
    spans = read_spans(model, tokenizer, "which port", [without, long], max_length=24, stride=8)
    assert len(tokenizer(long)["input_ids"]) > 24
    assert spans[0].context == 1 and long[spans[0].start:spans[0].end] == "7741"
    assert spans[0].probability == pytest.approx(1.0, abs=1e-6)
    # flat logits: every (start, end) pair of the L tokens read is equally likely, 1 / L^2
    read = len(tokenizer("which port", without)["input_ids"])
    assert [s.context for s in spans] == [1, 0] and spans[1].probability == pytest.approx(1 / read**2)
    assert read_spans(model, tokenizer, "which port", []) == []


# ---------------------------------------------------------------- reader: training and generation


@pytest.fixture(scope="module")
def reader_run(tiny_bert, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reader") / "model"
    return train_reader(data["qa"], data["qa_dev"], model=str(tiny_bert), options=fast(out, max_steps=18),
                        max_length=24, stride=8, progress=False)


def test_reader_trains_reports_and_reads(reader_run, tiny_bert):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    out, metrics = reader_run.output_dir, reader_run.metrics
    assert_loss_goes_down(out)
    validation = json.loads((out / "metrics.json").read_text())["validation"]
    assert 0 <= validation["exact_match"] <= 100 and 0 <= validation["f1"] <= 100 and validation["n"] == 12
    assert validation["exact_match"] <= validation["f1"]
    assert validation["f1"] > 25  # well above picking one of the ~20 context words at random
    assert metrics["train"]["windows"] > 60  # contexts longer than the 24-token window were read in several
    assert json.loads((out / "reader.json").read_text()) == {"max_length": 24, "stride": 8}
    assert_run_files(out, tiny_bert)

    model = AutoModelForQuestionAnswering.from_pretrained(str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    contexts = [row["context"] for row in toy_qa(3, seed=3)]
    spans = read_spans(model, tokenizer, toy_qa(3, seed=3)[0]["question"], contexts, max_length=24, stride=8)
    assert sorted(s.context for s in spans) == [0, 1, 2]
    assert [s.probability for s in spans] == sorted((s.probability for s in spans), reverse=True)
    for span in spans:  # character offsets into the context, on token boundaries
        text = contexts[span.context][span.start:span.end]
        offsets = tokenizer(contexts[span.context], return_offsets_mapping=True)["offset_mapping"]
        assert text.strip() and text in contexts[span.context] and 0 < span.probability <= 1
        assert span.start in {a for a, b in offsets if b > a} and span.end in {b for a, b in offsets if b > a}


def test_reader_generator_answers_with_a_verbatim_quote(reader_run):
    config = GeneratorConfig(backend="reader", model=str(reader_run.output_dir), min_score=0.0, device="cpu")
    generator = create("generator", "reader", config)
    sources = [hit(1, "dogs bark at night. the cat sat on the mat."),
               hit(2, "backups run daily at three in the morning. the sync daemon listens on port 7741.")]
    prompt = Prompt(question="the sync daemon listens on port", sources=sources, messages=[])
    generation = generator.generate(prompt)
    match = re.fullmatch(r"(.+) \[([12])\]", generation.text)
    assert match and not generation.abstained, generation.text
    span, n = match.group(1), int(match.group(2))
    [(quoted_n, quote)] = generation.quotes
    assert quoted_n == n and span in quote and quote in sources[n - 1].text
    sentences = re.split(r"(?<=\.) ", sources[n - 1].text)  # the quote is whole sentences
    runs = {" ".join(sentences[a:b]) for a in range(len(sentences)) for b in range(a + 1, len(sentences) + 1)}
    assert quote in runs, quote

    strict = create("generator", "reader", config.model_copy(update={"min_score": 1.01}))
    refused = strict.generate(prompt)
    assert refused.abstained and refused.quotes == [] and "[" not in refused.text
    with pytest.raises(ConfigError, match="generator.model"):
        create("generator", "reader", GeneratorConfig(backend="reader"))


def test_rag_answers_with_the_reader_and_its_citation_checks_out(reader_run, kb):
    kb.config.generator = GeneratorConfig(backend="reader", model=str(reader_run.output_dir), min_score=0.0,
                                          device="cpu")
    answer = RAG(kb).ask("the sync daemon listens on port", k=3)
    assert answer.generator == "reader" and not answer.abstained and not answer.invalid_citations, answer
    [citation] = answer.citations
    source = answer.hits[citation.number - 1]
    assert citation.chunk_id == source.chunk_id and citation.quote and citation.quote in source.text
    assert answer.text.endswith(f"[{citation.number}]") and answer.text.split(" [")[0] in citation.quote


# ---------------------------------------------------------------- bad data


def test_bad_pairs_and_contextless_qa_name_file_and_line_and_write_nothing(tiny_bert, tmp_path):
    out = tmp_path / "out"
    rows = toy_pairs(4)
    del rows[2]["positive"]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    for train in (train_embedder, train_reranker):
        with pytest.raises(InputError, match=r"bad\.jsonl:3: field 'positive' is missing"):
            train(bad, model=str(tiny_bert), options=fast(out), progress=False)
    qa = toy_qa(4, seed=0)
    del qa[1]["context"]
    no_context = write_jsonl(tmp_path / "qa.jsonl", qa)
    with pytest.raises(InputError, match=r"qa\.jsonl:2: field 'context' is missing") as caught:
        train_reader(no_context, model=str(tiny_bert), options=fast(out), max_length=32, stride=8, progress=False)
    assert "qa.jsonl:1" not in str(caught.value)
    assert not out.exists()


# ---------------------------------------------------------------- CLI


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.write_text(",".join(header) + "\n" + "".join(",".join(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def cli(monkeypatch):
    """The real `ragtune` app under CliRunner; its callback's warning hook is undone afterwards."""
    from ragtune.cli import app

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def _saved(output: str, what: str, out: Path, next_step: str) -> None:
    """The 'saved ...' and 'next: ...' lines of stdout."""
    assert re.search(rf"^saved {what} to {re.escape(str(out))}: 2 steps, [\d.]+ s$", output, re.M), output
    assert re.search(rf"^next: .*{re.escape(next_step)}", output, re.M), output


def test_cli_trains_the_embedder_and_reranker_from_mapped_csv(cli, tiny_bert, kb_folder, tmp_path):
    rows = toy_pairs(16)
    pairs = _csv(tmp_path / "pairs.csv", ["question", "passage", "hard"],
                 [[r["query"], r["positive"], r["negative"]] for r in rows])
    mapping = ["--column", "query=question", "--column", "positive=passage", "--column", "negative=hard"]
    common = ["--model", tiny_bert, "--max-steps", 2, "--batch-size", 8, "--max-length", 32, "-q"]
    result = cli("train", "embedder", "--train", pairs, *mapping, *common, "--out", tmp_path / "emb")
    assert result.exit_code == 0, result.output
    _saved(result.stdout, "embedder", tmp_path / "emb", f"embedder: {{model: {tmp_path / 'emb'}}}")
    run = json.loads((tmp_path / "emb" / "ragtune_run.json").read_text())
    assert run["data"]["train"]["rows"] == 16 and run["options"]["max_steps"] == 2

    result = cli("train", "reranker", "--train", pairs, *mapping, *common, "--out", tmp_path / "rr",
                 "--negatives", 2, "--project", kb_folder)
    assert result.exit_code == 0, result.output
    # started from an embedding model: the head is new, so the next step suggests fusing with retrieval
    _saved(result.stdout, "reranker", tmp_path / "rr", f"rerank: {{model: {tmp_path / 'rr'}, first_stage_weight: 0.6}}}}")
    run = json.loads((tmp_path / "rr" / "ragtune_run.json").read_text())
    assert run["mined"] is True and run["negatives_per_query"] == 2

    again = cli("train", "reranker", "--train", pairs, *mapping, *common[2:], "--model", tmp_path / "rr",
                "--out", tmp_path / "rr2")
    assert again.exit_code == 0, again.output  # from a cross-encoder: its head is trained, no fusion hint
    _saved(again.stdout, "reranker", tmp_path / "rr2", f"rerank: {{model: {tmp_path / 'rr2'}}}}}` in ragtune.yaml")


def test_cli_trains_the_reader_from_mapped_csv(cli, tiny_bert, tmp_path):
    header = ["q", "a", "passage"]
    qa = _csv(tmp_path / "qa.csv", header, [[r["question"], r["answer"], r["context"]] for r in toy_qa(16, 0)])
    dev = _csv(tmp_path / "dev.csv", header, [[r["question"], r["answer"], r["context"]] for r in toy_qa(4, 5)])
    mapping = ["--column", "question=q", "--column", "answer=a", "--column", "context=passage"]
    result = cli("train", "reader", "--train", qa, "--validation", dev, *mapping, "--model", tiny_bert,
                 "--window", 32, "--stride", 8, "--max-steps", 2, "--eval-steps", 2, "--batch-size", 8, "-q",
                 "--out", tmp_path / "reader")
    assert result.exit_code == 0, result.output
    out = tmp_path / "reader"
    _saved(result.stdout, "reader", out, f"generator: {{backend: reader, model: {out}}}")
    assert re.search(r"^validation: exact_match [\d.]+, f1 [\d.]+", result.output, re.M), result.output
    assert json.loads((tmp_path / "reader" / "reader.json").read_text()) == {"max_length": 32, "stride": 8}


def test_cli_bad_file_is_one_line_and_exit_2(tiny_bert, tmp_path, monkeypatch, capsys):
    from ragtune import cli

    rows = [[r["question"], r["answer"], r["context"]] for r in toy_qa(4, 0)]
    rows[1][2] = ""  # line 3 of the file: no context
    qa = _csv(tmp_path / "qa.csv", ["question", "answer", "context"], rows)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    monkeypatch.setattr(sys, "argv", ["ragtune", "train", "reader", "--train", str(qa), "--model", str(tiny_bert),
                                      "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as caught:
        cli.main()
    captured = capsys.readouterr()
    assert caught.value.code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "qa.csv:3: field 'context' is missing" in lines[0]
    assert "Traceback" not in captured.err + captured.out and not (tmp_path / "out").exists()
