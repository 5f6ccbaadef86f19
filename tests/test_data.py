"""Training data: format detection, canonical rows with line numbers, check, split, and the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ragtune.cli_data import data_app
from ragtune.errors import InputError
from ragtune.train import data
from ragtune.train.data import FORMATS, check, detect_format, load_examples, split, write_jsonl_atomic

ASSETS = Path(__file__).parent / "assets" / "data"
ROOT = Path(__file__).resolve().parents[1]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def reviews(n: int, groups: int | None = None) -> list[dict]:
    """n distinct classification rows; with `groups`, a `source` meta field cycling through that many."""
    return [{"text": f"review number {i}", "label": "pos" if i % 3 else "neg",
             **({"source": f"doc{i % groups}"} if groups else {})} for i in range(n)]


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize("fields, expected", [
    (["messages"], "messages"),
    (["prompt", "completion"], "prompt_completion"),
    (["input", "output"], "prompt_completion"),
    (["instruction", "input", "output"], "prompt_completion"),
    (["question", "answer"], "qa"),
    (["id", "title", "context", "question", "answers"], "qa"),
    (["text", "label"], "classification"),
    (["sentence", "label", "idx"], "classification"),
    (["query", "positive", "negative"], "pairs"),
    (["anchor", "positive"], "pairs"),
])
def test_detect_format_and_aliases(fields, expected):
    assert detect_format(fields) == expected


def test_detect_format_with_column_mapping():
    assert detect_format(["review", "stars"], {"text": "review", "label": "stars"}) == "classification"
    # the mapping settles a file whose columns fit two formats
    assert detect_format(["prompt", "completion", "text", "label"], {"text": "text"}) == "classification"


def test_detect_format_errors_list_the_accepted_columns():
    with pytest.raises(InputError) as info:
        detect_format(["foo", "bar"])
    message = str(info.value)
    assert "(bar, foo)" in message and "--column" in message
    for fmt in FORMATS:
        assert fmt in message
    assert "sentence" in message and "anchor" in message  # aliases are listed too
    with pytest.raises(InputError, match="more than one format"):
        detect_format(["prompt", "completion", "text", "label"])


# ---------------------------------------------------------------- loading


@pytest.mark.parametrize("name, fmt, lines, first", [
    ("reviews.jsonl", "classification", [1, 2, 3, 5, 6, 7, 8, 9, 10, 11],  # line 4 is blank
     {"text": "The battery lasts two full days.", "label": "1", "meta": {"source": "phone-a"}}),
    ("sentences.csv", "classification", [2, 3, 5, 6],  # record 2 spans lines 3-4
     {"text": "Plain row, with a comma", "label": "pos", "meta": {"source": "doc1"}}),
    ("reviews.tsv", "classification", [2, 3, 5], {"text": '"Quoted" start is literal', "label": "pos", "meta": {}}),
    ("chat.jsonl.gz", "messages", [1, 2], {"messages": [
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."}], "meta": {}}),
    ("completions.jsonl", "prompt_completion", [1, 2],
     {"prompt": "Translate to French: cat", "completion": "chat", "meta": {}}),
    ("alpaca.json", "prompt_completion", [2, 7, 12], {"prompt": "Add the numbers.\n\n2 and 3", "completion": "5", "meta": {}}),
    ("squad.jsonl", "qa", [1, 2, 3, 4], {"question": "Where do penguins live?", "answer": "the Southern Hemisphere",
                                         "context": "Penguins live in the Southern Hemisphere.", "answer_start": 17,
                                         "meta": {"id": "q1", "title": "Penguins"}}),
    ("qa.csv", "qa", [2, 4], {"question": "When do backups run?", "answer": "at 02:00",
                              "context": "Backups run nightly\nat 02:00.", "answer_start": 20, "meta": {}}),
    ("pairs.csv", "pairs", [2, 3], {"query": "reset password", "positive": "Use the reset link on the login page.",
                                    "negative": "Backups run nightly.", "meta": {}}),
    ("pairs.jsonl", "pairs", [1, 2], {"query": "reset password", "positive": "Use the reset link.",
                                      "negative": ["Backups run nightly.", "Salaries are reviewed in April."], "meta": {}}),
])
def test_load_fixture_canonical_rows_and_lines(name, fmt, lines, first):
    examples = load_examples(ASSETS / name)
    assert (examples.format, examples.lines, examples.rows[0]) == (fmt, lines, first)
    assert len(examples) == len(lines) and examples.source == str(ASSETS / name)


def test_optional_fields_and_special_layouts():
    csv_rows = load_examples(ASSETS / "sentences.csv").rows
    assert csv_rows[1]["text"] == "A review that spans\ntwo lines" and csv_rows[3]["text"] == 'He said "wow"'
    assert load_examples(ASSETS / "qa.csv").rows[1] == {"question": "Who reviews salaries?", "answer": "the committee",
                                                        "meta": {}}  # empty optional cells are absent
    squad = load_examples(ASSETS / "squad.jsonl").rows
    assert squad[1]["answer"] == "" and "answer_start" not in squad[1]  # SQuAD v2 unanswerable
    assert squad[3] == {"question": "Who wrote Hamlet?", "answer": "Shakespeare", "meta": {}}
    alpaca = load_examples(ASSETS / "alpaca.json").rows
    assert alpaca[1]["prompt"] == "Name a primary colour." and alpaca[1]["meta"] == {}  # empty input: dropped
    assert load_examples(ASSETS / "pairs.csv").rows[1].get("negative") is None
    assert load_examples(ASSETS / "reviews.jsonl").labels() == ["0", "1"]
    assert load_examples(ASSETS / "chat.jsonl.gz").labels() == []


def test_column_mapping_and_explicit_format(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("review,stars,product\nLoved it,5,a\nMeh,2,b\n")
    examples = load_examples(path, columns={"text": "review", "label": "stars"})
    assert examples.rows[0] == {"text": "Loved it", "label": "5", "meta": {"product": "a"}}
    assert load_examples(path, "classification", {"text": "review", "label": "stars"}).lines == [2, 3]
    with pytest.raises(InputError, match=r"no column 'label' for field 'label'.*columns: review, stars, product.*--column label=COLUMN"):
        load_examples(path, "classification", {"text": "review"})
    with pytest.raises(InputError, match="no column 'score' for field 'label'"):
        load_examples(path, columns={"text": "review", "label": "score"}, format="classification")
    with pytest.raises(InputError, match="'review' is not a field of classification"):
        load_examples(path, "classification", {"review": "text"})
    with pytest.raises(InputError, match="unknown format 'sentiment'.*classification"):
        load_examples(path, "sentiment")


def test_labels_and_integer_labels(tmp_path):
    rows = [{"text": "a", "label": 0}, {"text": "b", "label": "1"}, {"text": "c", "label": 2}]
    assert [r["label"] for r in load_examples(rows, labels=["0", "1", "2"]).rows] == ["0", "1", "2"]
    with pytest.raises(InputError, match=r"<list>:3: field 'label' has unknown label '2': use one of 0, 1"):
        load_examples(rows, labels=[0, 1])


@pytest.mark.parametrize("name, expected", [
    ("bad_reviews.jsonl", [":2: not valid JSON", ":3: field 'label' is missing", ":4: field 'text' is empty",
                           ":5: field 'text' must be text, not int", ":6: field 'label' must be a string or integer",
                           ":7: a JSON object is needed, not a list", "6 bad rows, 6 problems"]),
    ("bad.csv", [":3: has 3 values but the header names 2 columns: quote cells that contain a comma",
                 ":4: field 'label' is empty", ":8: not valid CSV"]),
    ("bad_qa.jsonl", [":1: field 'answer' is not found in 'context'",
                      ":2: field 'answer_start' (3) does not point at the answer", "the answer starts at 12",
                      ":3: field 'answer_start' needs a context"]),
    ("bad_chat.jsonl", [":1: field 'messages' has role 'bot' in message 2: use one of system, user, assistant",
                        ":2: field 'messages' has no assistant message", ":3: field 'messages' has no text in message 2",
                        ":4: field 'messages' must be a JSON list"]),
])
def test_bad_rows_raise_one_error_with_file_lines(name, expected):
    with pytest.raises(InputError) as info:
        load_examples(ASSETS / name)
    message = str(info.value)
    for part in expected:
        assert part in message, (part, message)
    assert f"{ASSETS / name}:" in message and "ragtune data check" in message


def test_error_lists_the_first_ten_problems_and_the_total(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"text": "t", "label": "" if i % 2 else "x"}) + "\n" for i in range(50)))
    message = str(pytest.raises(InputError, load_examples, path).value)
    assert message.count(f"\n  {path}:") == 10 and "... and 15 more" in message and "25 bad rows, 25 problems" in message
    assert f"{path}:2: field 'label' is empty" in message


@pytest.mark.parametrize("content, name, expected", [
    (b"", "empty.jsonl", "no rows: the file is empty"),
    (b"", "empty.csv", "empty file"),
    (b"text,text\na,b\n", "dup.csv", "column text appears twice"),
    (b"\x00\x01binary", "blob.jsonl", "binary file"),
    (b"not gzip", "bad.jsonl.gz", "cannot read"),
    (b'{"text": "a"}', "obj.json", "must hold a list of objects"),
    (b'[{"text": "a", "label": "b"} {"text": "c"}]', "list.json", ":1: expected ',' or ']'"),
    (b"a,b", "data.parquet", "unsupported file type"),
    (b"\xff\xfe\xfa bad utf8\n", "latin.jsonl", "not UTF-8"),
    (b'{"foo": 1}\n', "unknown.jsonl", "no known format fits the columns (foo)"),
    (b"not json\nstill not\n", "garbage.jsonl", "garbage.jsonl:2: not valid JSON"),
])
def test_unreadable_files(tmp_path, content, name, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_examples(path)


def test_missing_file_folder_and_bad_source(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_examples(tmp_path / "nope.jsonl")
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        load_examples(tmp_path / "dir.jsonl")
    with pytest.raises(InputError, match="give a file path, a datasets.Dataset or a list of dicts"):
        load_examples(42)


class FakeDataset:
    """Duck-typed datasets.Dataset: column_names and iteration over dict rows."""

    def __init__(self, rows: list[dict]):
        self.rows, self.column_names = rows, list(rows[0])

    def __iter__(self):
        return iter(self.rows)


def test_dataset_and_list_inputs():
    squad = FakeDataset([{"id": "1", "context": "Oslo is cold.", "question": "What is cold?",
                          "answers": {"text": ["Oslo"], "answer_start": [0]}}])
    examples = load_examples(squad)
    assert (examples.format, examples.source, examples.lines) == ("qa", "<dataset>", [1])
    assert examples.rows[0] == {"question": "What is cold?", "answer": "Oslo", "context": "Oslo is cold.",
                                "answer_start": 0, "meta": {"id": "1"}}
    with pytest.raises(InputError, match="<dataset>: no column 'text/sentence' for field 'text'"):
        load_examples(squad, "classification")
    chat = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}, "oops"]
    with pytest.raises(InputError, match="<list>:2: a dict of fields is needed, not text"):
        load_examples(chat)
    assert load_examples(chat[:1]).format == "messages"


def test_meta_column_round_trips():
    rows = [{"text": "a", "label": "x", "meta": {"source": "doc1"}, "lang": "en"}]
    assert load_examples(rows).rows[0]["meta"] == {"source": "doc1", "lang": "en"}


# ---------------------------------------------------------------- check


def test_check_collects_every_problem_with_lines():
    report = check(ASSETS / "bad_reviews.jsonl", labels=["pos", "neg"], max_tokens=2)
    assert not report.ok and report.rows == 11 and report.format == "classification"
    by_line = {}
    for line, message in report.errors:
        by_line.setdefault(line, []).append(message)
    assert sorted(by_line) == [1, 2, 3, 4, 5, 6, 7, 10, 11, 12]
    assert by_line[1] == ["example has 3 whitespace tokens, over the limit of 2: shorten it or drop the row"]
    assert any("same text as line 9 but label 'pos' (line 9 has 'neg')" in m for m in by_line[11])
    assert by_line[12] == ["field 'label' has unknown label 'meh': use one of neg, pos, or add it to the label list"]
    assert (10, "duplicate of line 1: drop one copy") in report.warnings
    assert report.stats["duplicates"] == 1 and report.stats["conflicting_duplicates"] == 1
    assert report.stats["rows_with_errors"] == 10 and report.stats["valid_rows"] == 4
    assert report.stats["over_max_tokens"] == 2  # lines 1 and 10: "Works as described." is 3 words


def test_check_stats_on_a_clean_file():
    report = check(ASSETS / "reviews.jsonl")
    assert report.ok and report.errors == [] and report.warnings == []
    stats = report.stats
    assert stats["labels"] == {"0": 5, "1": 5} and stats["rows"] == stats["valid_rows"] == 10
    assert stats["tokens"] == {"unit": "whitespace tokens", "min": 3, "median": 5.0, "p95": 6, "max": 6}
    assert stats["chars"]["max"] == len("The battery lasts two full days.")
    assert stats["duplicates"] == 0 and "over_max_tokens" not in stats


def test_check_label_warnings():
    rows = [{"text": f"t{i}", "label": "a"} for i in range(20)] + [{"text": "u", "label": "b"}]
    warnings = [m for _, m in check(rows, labels=["a", "b", "c"]).warnings]
    assert "label 'c' has no examples" in warnings
    assert any("'b' has only 1 example" in m for m in warnings)
    assert any("imbalanced: 'a' has 20 examples, 'b' only 1" in m for m in warnings)


def test_check_tokenizers():
    rows = [{"query": "short", "positive": "a much longer positive passage", "negative": ["x y"]}]
    by_chars = check(rows, tokenizer=list, max_tokens=10)  # any callable text -> list of tokens
    assert by_chars.stats["tokens"]["max"] == len("a much longer positive passage")  # pairs: longest text
    assert by_chars.errors == [(1, "example has 30 tokens, over the limit of 10: shorten it or drop the row")]

    class HFLike:  # the Hugging Face calling convention: batched, no truncation, no warnings
        model_max_length = 512
        calls: list = []

        def __call__(self, texts, truncation, verbose):
            self.calls.append((len(texts), truncation, verbose))
            return {"input_ids": [[101, *range(len(t.split())), 102] for t in texts]}

    class EncodeOnly:  # tiktoken's shape: not callable, has encode
        def encode(self, text):
            return text.split()

    assert check(ASSETS / "reviews.jsonl", tokenizer=EncodeOnly()).stats["tokens"]["max"] == 6
    tokenizer = HFLike()
    report = check(ASSETS / "reviews.jsonl", tokenizer=tokenizer)
    assert report.stats["tokens"] == {"unit": "tokens", "min": 5, "median": 7.0, "p95": 8, "max": 8}
    assert tokenizer.calls == [(10, False, False)]


def test_check_other_formats():
    qa = check(ASSETS / "bad_qa.jsonl")
    assert [line for line, _ in qa.errors] == [1, 2, 3] and qa.stats["with_context"] == 1
    squad = check(ASSETS / "squad.jsonl")
    assert squad.ok and squad.stats["unanswerable"] == 1 and squad.stats["with_context"] == 3
    chat = check(ASSETS / "bad_chat.jsonl")
    assert [line for line, _ in chat.errors] == [1, 2, 3, 4] and chat.stats["valid_rows"] == 1
    assert chat.stats["messages_per_example"]["max"] == 2
    assert check(ASSETS / "pairs.jsonl").stats["with_negative"] == 1
    csv_report = check(ASSETS / "bad.csv")
    assert [line for line, _ in csv_report.errors] == [3, 4, 8] and csv_report.stats["valid_rows"] == 3


def test_check_raises_only_for_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        check(tmp_path / "missing.csv")


# ---------------------------------------------------------------- split


def test_split_is_deterministic_and_close_to_the_ratios(tmp_path):
    rows = reviews(200)
    first = split(rows, tmp_path / "a", seed=3)
    again = split(rows, tmp_path / "b", seed=3)
    other = split(rows, tmp_path / "c", seed=4)
    assert first.counts == {"train": 160, "validation": 20, "test": 20}
    for name in ("train", "validation", "test"):
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
    assert (tmp_path / "a" / "test.jsonl").read_bytes() != (tmp_path / "c" / "test.jsonl").read_bytes()
    written = [row for name in first.paths for row in read_jsonl(first.paths[name])]
    assert sorted(r["text"] for r in written) == sorted(r["text"] for r in rows)  # each row exactly once
    assert written[0] == {"text": written[0]["text"], "label": written[0]["label"], "meta": {}}
    assert first.duplicates_across_splits == [] and first.warnings == [] and other.counts == first.counts
    assert sorted(os.listdir(tmp_path / "a")) == ["test.jsonl", "train.jsonl", "validation.jsonl"]  # no temp files
    assert load_examples(first.paths["train"]).format == "classification"  # split files load back


def test_split_keeps_groups_together(tmp_path):
    report = split(reviews(300, groups=30), tmp_path, ratios=(0.7, 0.15, 0.15), seed=1, group_key="source")
    seen: dict[str, str] = {}
    for name, path in report.paths.items():
        for row in read_jsonl(path):
            assert seen.setdefault(row["meta"]["source"], name) == name  # no group in two splits
    assert sum(report.groups.values()) == 30
    targets = {"train": 210, "validation": 45, "test": 45}
    assert all(abs(report.counts[n] - targets[n]) <= 10 for n in targets)  # within one group (10 rows)
    qa = [{"question": f"q{i}", "answer": "cat", "context": f"ctx {i % 4} cat"} for i in range(12)]
    by_context = split(qa, tmp_path / "qa", group_key="context", ratios=(0.5, 0.5))
    assert by_context.groups == {"train": 2, "validation": 2} and set(by_context.paths) == {"train", "validation"}


def test_split_with_few_groups_fills_every_split(tmp_path):
    report = split(ASSETS / "reviews.jsonl", tmp_path, group_key="source")  # 5 groups of 2
    assert report.counts == {"train": 6, "validation": 2, "test": 2} and report.warnings == []


def test_split_reports_duplicates_across_splits(tmp_path):
    rows = [{"text": "same text", "label": "neg"}] * 10 + reviews(10)  # 10 copies cannot all fit one half
    report = split(rows, tmp_path, ratios=(0.5, 0.5))
    assert len(report.duplicates_across_splits) == 1
    entry = report.duplicates_across_splits[0]
    assert entry["text"] == "same text" and set(entry["lines"]) == {"train", "validation"}
    assert sorted(line for lines in entry["lines"].values() for line in lines) == list(range(1, 11))
    assert any("same input in two splits" in w for w in report.warnings)


def test_split_validates_ratios_and_group_key(tmp_path):
    for ratios in [(0.8, 0.1), (0.5, 0.3, 0.1, 0.1), (1.2, -0.2), (1.0,)]:
        with pytest.raises(InputError, match="sum to 1"):
            split(reviews(10), tmp_path, ratios=ratios)
    with pytest.raises(InputError, match=r"<list>:1: no value for group key 'source'"):
        split(reviews(10), tmp_path, group_key="source")
    assert not any(tmp_path.iterdir())


def test_split_writes_nothing_for_bad_input_and_keeps_old_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_text("old train\n")
    with pytest.raises(InputError, match="bad_reviews.jsonl:2"):
        split(ASSETS / "bad_reviews.jsonl", out)
    assert os.listdir(out) == ["train.jsonl"] and (out / "train.jsonl").read_text() == "old train\n"
    with pytest.raises(InputError):
        split(ASSETS / "bad.csv", tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_split_failure_while_writing_leaves_no_partial_files(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.jsonl").write_text("old\n")
    real, calls = data._write_temp, []

    def failing(rows, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(path))
        return real(rows, path)

    monkeypatch.setattr(data, "_write_temp", failing)
    with pytest.raises(InputError, match="No space left on device.*nothing was written"):
        split(reviews(20), out)
    assert os.listdir(out) == ["train.jsonl"] and (out / "train.jsonl").read_text() == "old\n"


def test_two_way_split_warns_about_a_stale_test_file(tmp_path):
    (tmp_path / "test.jsonl").write_text("{}\n")
    report = split(reviews(10), tmp_path, ratios=(0.7, 0.3))
    assert report.counts == {"train": 7, "validation": 3}
    assert any("test.jsonl is left over" in w for w in report.warnings)


def test_write_jsonl_atomic(tmp_path):
    path = write_jsonl_atomic(iter([{"text": "é", "label": "x"}]), tmp_path / "sub" / "rows.jsonl")
    assert path.read_text(encoding="utf-8") == '{"text": "é", "label": "x"}\n'
    assert os.listdir(path.parent) == ["rows.jsonl"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # a normal file, not mkstemp's owner-only one


# ---------------------------------------------------------------- CLI


def cli(*args: str):
    root = typer.Typer()
    root.add_typer(data_app, name="data")
    root.callback()(lambda: None)
    return CliRunner().invoke(root, ["data", *args])


def test_cli_check_exit_codes_and_output():
    good = cli("check", str(ASSETS / "sentences.csv"))
    assert good.exit_code == 0, good.output
    assert "label pos" in good.output and "ok: 4 rows" in good.output
    bad = cli("check", str(ASSETS / "bad_reviews.jsonl"), "--labels", "pos,neg", "--show", "3")
    assert bad.exit_code == 1
    assert f"{ASSETS / 'bad_reviews.jsonl'}:2: not valid JSON" in bad.output
    assert f"{ASSETS / 'bad_reviews.jsonl'}:4: field 'text' is empty" in bad.output
    assert ":5:" not in bad.output and "... and 5 more errors" in bad.output
    assert "8 errors in 8 rows: 11 rows" in bad.output


def test_cli_check_json_and_columns(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("review\tstars\nok\t5\nbad\t\n")
    result = cli("check", str(path), "--column", "text=review", "-c", "label=stars", "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["errors"] == [{"line": 3, "message": "field 'stars' (label) is empty: fill it in or remove the row"}]
    assert report["format"] == "classification" and report["stats"]["valid_rows"] == 1
    assert isinstance(cli("check", str(path), "--column", "text").exception, InputError)
    missing = cli("check", str(path), "--tokenizer", str(path.parent / "no-model"))
    assert isinstance(missing.exception, InputError) and "no such folder" in str(missing.exception)


def test_cli_split(tmp_path):
    result = cli("split", str(ASSETS / "reviews.jsonl"), "--out", str(tmp_path), "--group-key", "source",
                 "--ratios", "0.6,0.2,0.2", "--seed", "7")
    assert result.exit_code == 0, result.output
    assert "train            6 rows, 3 groups" in result.output
    assert len(read_jsonl(tmp_path / "test.jsonl")) == 2
    assert isinstance(cli("split", str(ASSETS / "reviews.jsonl"), "--out", str(tmp_path), "--ratios", "a,b").exception,
                      InputError)


def _wired() -> bool:
    return "data_app" in (ROOT / "src" / "ragtune" / "cli.py").read_text()


@pytest.mark.skipif(not _wired(), reason="`ragtune data` is not yet added to ragtune.cli")
def test_ragtune_data_subprocess(tmp_path):
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ragtune.cli", "data", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=60)

    bad = run("check", str(ASSETS / "bad.csv"))
    assert bad.returncode == 1 and f"{ASSETS / 'bad.csv'}:8: not valid CSV" in bad.stdout
    missing = run("split", "missing.jsonl", "--out", "out")
    assert missing.returncode == 2 and missing.stderr.strip() == "error: missing.jsonl: no such file"
    done = run("split", str(ASSETS / "sentences.csv"), "--out", "out", "--ratios", "0.5,0.5")
    assert done.returncode == 0 and sorted(os.listdir(tmp_path / "out")) == ["train.jsonl", "validation.jsonl"]


def test_cli_module_import_is_light():
    code = ("import sys, ragtune.cli_data; "
            "print([m for m in ('torch', 'transformers', 'datasets', 'sentence_transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_check_with_the_default_tokenizer():
    result = cli("check", str(ASSETS / "reviews.jsonl"), "--tokenizer", "default", "--max-tokens", "8", "--json")
    report = json.loads(result.output)
    assert report["stats"]["tokens"]["unit"] == "tokens" and report["stats"]["tokens"]["max"] == 9
    assert report["errors"] == [{"line": 1, "message": "example has 9 tokens, over the limit of 8: shorten it or "
                                                       "drop the row"}]
