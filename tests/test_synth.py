"""`ragtune data synth`: cloze questions offline, a generator's JSON checked against the passage, the CLI."""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from ragtune.cli_data import data_app
from ragtune.config import GeneratorConfig
from ragtune.errors import GenerationError
from ragtune.generate.base import Generation
from ragtune.registry import create, register
from ragtune.train.data import load_examples, write_jsonl_atomic
from ragtune.train.synth import parse_reply, synthesize
from ragtune.types import Document, Section
from tests.conftest import EXAMPLE_DOCS, write_docs

DOCS = {
    "sync.md": "# Sync\n\n## Ports\n\nThe sync daemon listens on TCP port 7741 by default.\n\n"
               "Version 3.2.1 was released on 2024-12-09 with several fixes for desktop clients.\n\n"
               "## Settings\n\nSet `sync.interval` in the configuration file to change how often clients poll.\n",
    "backup.txt": "Backups run nightly at 02:00 and are kept for 30 days on the backup volume.\n\n"
                  "Each archive is written to /var/backups/quill unless another folder is configured.\n",
}
EXPECTED = {"7741", "3.2.1", "2024-12-09", "sync.interval", "02:00", "30 days", "/var/backups/quill"}


@pytest.fixture
def docs(tmp_path):
    return write_docs(tmp_path / "docs", DOCS)


def by_fact(rows: list[dict]) -> dict[str, list[dict]]:
    facts = defaultdict(list)
    for row in rows:
        facts[row["fact"]].append(row)
    return facts


# ---------------------------------------------------------------- cloze


def test_cloze_masks_a_span_that_sits_at_answer_start(docs):
    rows = synthesize([docs], method="cloze", progress=False)
    assert rows.method == "cloze" and rows.skipped == []
    assert EXPECTED <= {row["answer"] for row in rows}
    assert [row["id"] for row in rows] == [f"s{n:04d}" for n in range(1, len(rows) + 1)]
    for row in rows:
        assert row["context"][row["answer_start"]:].startswith(row["answer"])
        assert "____" in row["question"] and row["answer"].lower() not in row["question"].lower()
        assert row["method"] == "cloze" and row["answerable"] is True
        assert row["source"] in {"docs/sync.md", "docs/backup.txt"}
    port = next(row for row in rows if row["answer"] == "7741")
    assert port["question"] == "[Sync > Ports] The sync daemon listens on TCP port ____ by default."
    assert port["context"] == "The sync daemon listens on TCP port 7741 by default."


def test_cloze_phrasings_per_fact_and_determinism(docs):
    rows = synthesize([docs], method="cloze", per_fact=3, seed=5, progress=False)
    facts = by_fact(rows)
    assert len(facts) == rows.facts >= len(EXPECTED)
    for phrasings in facts.values():
        assert len({row["question"] for row in phrasings}) == 3
        assert len({(row["answer"], row["context"], row["answer_start"]) for row in phrasings}) == 1
    assert rows == synthesize([docs], method="cloze", per_fact=3, seed=5, progress=False)
    sampled = synthesize([docs], method="cloze", max_facts=3, seed=1, progress=False)
    assert sampled.facts == 3 and sampled == synthesize([docs], method="cloze", max_facts=3, seed=1, progress=False)
    assert {row["answer"] for row in sampled} <= {row["answer"] for row in rows}


def test_output_loads_as_qa_examples(docs, tmp_path):
    rows = synthesize([docs], per_fact=2, progress=False)
    path = write_jsonl_atomic(rows, tmp_path / "qa.jsonl")
    examples = load_examples(path, "qa")
    assert len(examples) == len(rows) and load_examples(path).format == "qa"
    first = examples.rows[0]
    assert first["answer"] == rows[0]["answer"] and first["answer_start"] == rows[0]["answer_start"]
    assert first["meta"]["fact"] == "sf0001" and first["meta"]["method"] == "cloze"


def test_cloze_on_the_example_docs():
    rows = synthesize([EXAMPLE_DOCS], method="cloze", progress=False)
    assert rows.facts >= 50
    assert all(row["context"][row["answer_start"]:].startswith(row["answer"]) for row in rows)
    assert len(load_examples(list(rows), "qa")) == len(rows)


# ---------------------------------------------------------------- generator (a fake, through the real registry)

PASSAGE = ("The sync daemon listens on TCP port 7741 by default. Desktop clients reconnect automatically "
           "after a restart, and backups are kept for 30 days.")
REPLY = ('Here are the facts:\n```json\n['
         '{"questions": ["Which TCP port does the sync daemon use by default?", '
         '"On what port does the sync daemon accept clients?"], "answer": "Port 7741"}, '
         '{"questions": ["How long are backups kept?"], "answer": 30}, '
         '{"questions": ["Who develops the sync daemon?"], "answer": "Larkspur Labs"}]\n```')


class FakeWriter:
    """Replies with canned JSON: one good fact in two phrasings, one malformed, one not in the passage."""

    name = "fake-synth"
    context_window = 4096

    def __init__(self, config: GeneratorConfig, embedder=None):
        self.config, self.prompts = config, []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, prompt) -> Generation:
        self.prompts.append(prompt)
        return Generation(self.config.model or REPLY)

    def stream(self, prompt):
        yield self.generate(prompt)


register("generator", "fake-synth", FakeWriter)


def test_generator_keeps_pairs_whose_answer_is_in_the_passage():
    generator = create("generator", "fake-synth", GeneratorConfig(backend="fake-synth"))
    documents = [Document(id="sync.md", title="Sync", sections=[Section(PASSAGE, title="Sync > Ports")])]
    rows = synthesize(documents, generator=generator, per_fact=2, progress=False)
    assert rows.method == "generator" and rows.dropped == {"malformed": 1, "answer_not_in_passage": 1}
    assert [row["question"] for row in rows] == ["Which TCP port does the sync daemon use by default?",
                                                 "On what port does the sync daemon accept clients?"]
    assert {row["fact"] for row in rows} == {"sf0001"}
    for row in rows:
        assert row["answer"] == "port 7741" and row["context"] == PASSAGE  # the passage's own casing
        assert PASSAGE[row["answer_start"]:].startswith("port 7741") and row["method"] == "generator"
    prompt = generator.prompts[0].messages[-1]["content"]
    assert PASSAGE in prompt and "2 differently worded questions" in prompt and "Sync > Ports" in prompt


def test_generator_errors_and_auto_fallback():
    documents = [Document(id="a.md", sections=[Section(PASSAGE)])]
    garbled = create("generator", "fake-synth", GeneratorConfig(backend="fake-synth", model="no JSON here, sorry"))
    with pytest.raises(GenerationError, match="no usable question/answer pairs .*1 unparseable reply"):
        synthesize(documents, generator=garbled, progress=False)
    quoting = SimpleNamespace(name="extractive")  # cannot write questions: auto falls back to cloze
    assert synthesize(documents, generator=quoting, progress=False).method == "cloze"


def test_parse_reply_salvages_a_cut_off_list():
    assert parse_reply('{"pairs": [{"question": "q?", "answer": "a"}]}') == [{"question": "q?", "answer": "a"}]
    assert parse_reply('[{"questions": ["q?"], "answer": "a"}, {"questions": ["r') == [{"questions": ["q?"],
                                                                                      "answer": "a"}]
    assert parse_reply("nothing") is None


# ---------------------------------------------------------------- CLI


def cli(*args: str):
    root = typer.Typer()
    root.add_typer(data_app, name="data")
    root.callback()(lambda: None)
    return CliRunner().invoke(root, ["data", *args])


def test_cli_writes_the_file(docs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no project here: cloze
    out = tmp_path / "out" / "qa.jsonl"
    result = cli("synth", str(docs), "--out", str(out), "--per-fact", "2", "--seed", "3")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    facts = len({row["fact"] for row in rows})
    assert f"facts      {facts:>7}" in result.output and f"(cloze {len(rows)})" in result.output
    assert f"wrote {out}" in result.output


def test_cli_uses_the_project_generator(docs, tmp_path, monkeypatch):
    (tmp_path / "ragtune.yaml").write_text("generator: {backend: fake-synth}\n")
    (tmp_path / "one.txt").write_text(PASSAGE)
    monkeypatch.chdir(tmp_path)
    result = cli("synth", "one.txt", "--out", "qa.jsonl", "--per-fact", "2")
    assert result.exit_code == 0, result.output
    assert "(generator 2)" in result.output and "2  (1 malformed, 1 answer not in passage)" in result.output


@pytest.mark.parametrize("make, message", [
    (lambda root: root / "missing", "no such file or folder"),
    (lambda root: write_docs(root / "empty", {"a.md": "# Title\n\nToo short.\n", "b.txt": "Hello there, world."}),
     "no usable sentences"),
])
def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, make, message):
    from ragtune.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ragtune", "data", "synth", str(make(tmp_path)), "--out", "qa.jsonl"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "qa.jsonl").exists()


# ---------------------------------------------------------------- inverse-cloze pairs (query, positive)

ABSTRACTS = {
    "memory.md": "# Sleep and memory\n\nAdults slept either eight hours or four hours before a word-list task. "
                 "Recall was measured one day later by a blinded examiner. "
                 "Participants who slept eight hours recalled twice as many words as those who slept four hours.\n",
    "soil.md": "# Soil microbes\n\nWe sampled soil from forty farms across three regions of the valley. "
               "Bacterial diversity was assessed by sequencing of the marker gene. "
               "Farms that rotated crops held more diverse bacterial communities than farms that did not.\n",
    "short.md": "# Short\n\nOnly two sentences live in this file. That is too few for a pair.\n",
}


def test_inverse_cloze_pairs_take_one_sentence_out(tmp_path):
    from ragtune.train.synth import inverse_cloze_pairs

    folder = write_docs(tmp_path / "abstracts", ABSTRACTS)
    last = inverse_cloze_pairs([folder], sentence="last")
    assert [row["query"] for row in last] == [
        "Participants who slept eight hours recalled twice as many words as those who slept four hours.",
        "Farms that rotated crops held more diverse bacterial communities than farms that did not."]
    assert last.dropped == {"under_3_sentences": 1} and last.method == "inverse-cloze"
    memory = last[0]
    assert memory["positive"] == ("Sleep and memory\nAdults slept either eight hours or four hours before a word-list "
                                  "task. Recall was measured one day later by a blinded examiner.")
    assert memory["source"].endswith("memory.md") and [row["id"] for row in last] == ["p0001", "p0002"]
    picked = inverse_cloze_pairs([folder], seed=3)
    assert picked == inverse_cloze_pairs([folder], seed=3)  # seeded
    for row in picked:
        assert row["query"] not in row["positive"] and len(row["positive"].split("\n", 1)[1].split(". ")) == 2
    assert len(inverse_cloze_pairs([folder], max_pairs=1)) == 1
    examples = load_examples(list(picked), "pairs")  # what train embedder / train reranker read
    assert [row["query"] for row in examples.rows] == [row["query"] for row in picked]


def test_cli_writes_pairs_and_refuses_bad_choices(tmp_path, monkeypatch, capsys):
    from ragtune.cli import main

    folder = write_docs(tmp_path / "abstracts", ABSTRACTS)
    monkeypatch.chdir(tmp_path)
    result = cli("synth", str(folder), "--kind", "pairs", "--sentence", "last", "--out", "pairs.jsonl")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and "pairs            2  (inverse-cloze, last sentence)" in result.output
    assert "1 under 3 sentences" in result.output
    for args, message in [(["--kind", "pairs", "--sentence", "middle"], "unknown sentence choice 'middle'"),
                          (["--kind", "triples"], "--kind 'triples': use qa or pairs"),
                          (["--kind", "pairs", "--per-fact", "3"], "--per-fact applies to --kind qa, not --kind pairs"),
                          (["--max-pairs", "5"], "--max-pairs applies to --kind pairs, not --kind qa")]:
        monkeypatch.setattr(sys, "argv", ["ragtune", "data", "synth", str(folder), "--out", "bad.jsonl", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and "Traceback" not in err
        assert not (tmp_path / "bad.jsonl").exists()
    only_short = write_docs(tmp_path / "short", {"a.md": ABSTRACTS["short.md"]})
    monkeypatch.setattr(sys, "argv", ["ragtune", "data", "synth", str(only_short), "--kind", "pairs", "--out", "x.jsonl"])
    with pytest.raises(SystemExit):
        main()
    assert "inverse-cloze pairs need prose" in capsys.readouterr().err
