"""`ragtune train classifier` end to end on a tiny BERT: every mode trains, learns, reloads."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ragtune.errors import ConfigError, InputError
from ragtune.train.classifier import classification_metrics, load_classifier, train_classifier
from ragtune.train.common import MARKER, TrainingError, TrainOptions, read_log, training_arguments
from tests.tiny_encoders import tiny_bert, toy_data, toy_rows, write_jsonl  # noqa: F401  (fixtures)
from tests.tiny_generators import one_torch_thread  # noqa: F401  (fixture)



def fast(out: Path, **changes) -> TrainOptions:
    """Options for seconds-long runs on the toy task (96 rows, batch 16: 6 steps per epoch)."""
    values = dict(output_dir=str(out), batch_size=16, learning_rate=1e-2, warmup_ratio=0.0, max_steps=12,
                  eval_steps=6, logging_steps=2, max_length=32)
    return TrainOptions(**{**values, **changes})


def ragtune_command() -> list[str]:
    """The `ragtune` command of this checkout, run as a module (no installed script needed)."""
    return [sys.executable, "-m", "ragtune.cli"]


@pytest.mark.parametrize("mode", ["full", "lora", "probe"])
def test_every_mode_trains_reports_and_reloads(mode, tiny_bert, toy_data, tmp_path):
    out = tmp_path / mode
    result = train_classifier(toy_data["train"], toy_data["validation"], toy_data["test"], model=str(tiny_bert),
                              mode=mode, options=fast(out), progress=False)
    assert result.labels == ["backup", "pets", "security"] and result.world_size == 1
    losses = [event["loss"] for event in read_log(out / "train_log.jsonl") if "loss" in event]
    assert len(losses) >= 4 and np.mean(losses[-2:]) < losses[0], losses  # the loss goes down

    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("validation", "test"):
        assert 0 <= metrics[split]["accuracy"] <= 1 and 0 <= metrics[split]["macro_f1"] <= 1
        assert np.array(metrics[split]["confusion_matrix"]).sum() == metrics[split]["n"] == 24
    card = (out / "README.md").read_text()
    assert str(tiny_bert) in card and mode in card
    assert json.loads((out / "ragtune_run.json").read_text())["data"]["train"]["sha256"] in card
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert all((c / MARKER).is_file() for c in (out / "checkpoints").glob("checkpoint-*"))
    rows = [json.loads(line) for line in (out / "predictions_test.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 25)) and "text" not in rows[0]

    classifier = load_classifier(out)  # a plain transformers folder: reloads without ragtune state
    texts = [row["text"] for row in toy_rows(24, 3)]
    predicted = classifier.classify(texts)
    assert [label for label, _ in predicted] == result.predictions["test"]
    assert all(0 < p <= 1 for _, p in predicted)
    if mode == "lora":  # the merged folder equals base + adapter
        import torch
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification

        base = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=3)
        adapted = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
        inputs = classifier.tokenizer(texts[:4], padding=True, return_tensors="pt")
        with torch.no_grad():
            assert torch.allclose(adapted(**inputs).logits, classifier.model(**inputs).logits, atol=1e-5)


def test_full_fine_tuning_learns_the_toy_task(tiny_bert, toy_data, tmp_path):
    result = train_classifier(toy_data["train"], toy_data["validation"], toy_data["test"], model=str(tiny_bert),
                              options=fast(tmp_path / "out", max_steps=36, eval_steps=12), progress=False)
    assert result.metrics["test"]["accuracy"] >= 0.9, result.metrics["test"]


def test_early_stopping_stops_and_keeps_the_best(tiny_bert, toy_data, tmp_path):
    # A learning rate too small to change any prediction: the metric never improves after the first evaluation.
    result = train_classifier(toy_data["train"], toy_data["validation"], model=str(tiny_bert), progress=False,
                              options=fast(tmp_path / "out", learning_rate=1e-9, max_steps=40, eval_steps=2, patience=2))
    assert result.metrics["train"]["global_step"] == 6
    assert result.metrics["train"]["best_checkpoint"].endswith("checkpoint-2")


def test_bad_rows_fail_with_file_and_line_and_write_nothing(tiny_bert, toy_data, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", toy_rows(2, 0) + [{"text": "no label here"}] + toy_rows(2, 4))
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"bad\.jsonl:3: .*label"):
        train_classifier(bad, model=str(tiny_bert), options=fast(out), progress=False)
    unknown = write_jsonl(tmp_path / "dev.jsonl", toy_rows(3, 0) + [{"text": "a cat", "label": "weather"}])
    with pytest.raises(InputError, match=r"dev\.jsonl:4: .*weather"):
        train_classifier(toy_data["train"], unknown, model=str(tiny_bert), options=fast(out), progress=False)
    with pytest.raises(ConfigError, match="--eval-steps"):
        train_classifier(toy_data["train"], toy_data["validation"], model=str(tiny_bert), progress=False,
                         options=fast(out, eval_steps=4, save_steps=6))
    assert not out.exists()


def test_a_used_output_folder_needs_resume(tiny_bert, toy_data, tmp_path):
    options = fast(tmp_path / "out", max_steps=2, eval_steps=None, save_steps=2)
    train_classifier(toy_data["train"], model=str(tiny_bert), options=options, progress=False)
    with pytest.raises(TrainingError, match="--resume"):
        train_classifier(toy_data["train"], model=str(tiny_bert), options=options, progress=False)


def test_metrics_match_scikit_learn():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    gold, predicted = rng.integers(0, 4, 200), rng.integers(0, 3, 200)  # label 3 is never predicted
    ours = classification_metrics(gold, predicted, ["a", "b", "c", "d"])
    assert ours["accuracy"] == pytest.approx(sklearn.accuracy_score(gold, predicted))
    assert ours["macro_f1"] == pytest.approx(sklearn.f1_score(gold, predicted, average="macro", zero_division=0))
    assert ours["confusion_matrix"] == sklearn.confusion_matrix(gold, predicted, labels=[0, 1, 2, 3]).tolist()


def test_save_and_eval_schedules_must_fit_keep_best(tmp_path):
    with pytest.raises(ConfigError, match="multiple"):
        training_arguments(fast(tmp_path, eval_steps=4, save_steps=6), output_dir=tmp_path, has_validation=True)
    with pytest.raises(ConfigError, match="--validation"):
        training_arguments(fast(tmp_path, patience=2), output_dir=tmp_path, has_validation=False)
    args = training_arguments(fast(tmp_path, eval_steps=4), output_dir=tmp_path, has_validation=True, primary_metric="macro_f1")
    assert (args.save_steps, args.load_best_model_at_end, args.metric_for_best_model, args.greater_is_better) == \
           (4, True, "macro_f1", True)


class _OutOfMemoryBert:
    """Registered in the test: a BERT classifier whose forward pass runs out of memory."""

    @staticmethod
    def register():
        import torch
        from transformers import (AutoConfig, AutoModelForSequenceClassification, BertConfig,
                                  BertForSequenceClassification)

        class OomConfig(BertConfig):
            model_type = "ragtune-test-oom-bert"

        class OomBert(BertForSequenceClassification):
            config_class = OomConfig

            def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        try:
            AutoConfig.register(OomConfig.model_type, OomConfig)
            AutoModelForSequenceClassification.register(OomConfig, OomBert)
        except ValueError:  # already registered by an earlier test in this session
            pass
        return OomConfig


def test_out_of_memory_gives_advice(tiny_bert, toy_data, tmp_path):
    from transformers import AutoTokenizer, BertConfig

    config_class = _OutOfMemoryBert.register()
    folder = tmp_path / "oom-bert"
    AutoTokenizer.from_pretrained(str(tiny_bert)).save_pretrained(str(folder))
    shutil.copy(tiny_bert / "model.safetensors", folder / "model.safetensors")
    config_class(**BertConfig.from_pretrained(str(tiny_bert)).to_dict()).save_pretrained(str(folder))
    with pytest.raises(TrainingError, match="out of memory") as caught:
        train_classifier(toy_data["train"], model=str(folder), options=fast(tmp_path / "out", eval_steps=None),
                         progress=False)
    message = str(caught.value)
    assert "--batch-size 8 --gradient-accumulation 2" in message and "--mode lora" in message and "--max-length" in message


def _cli():
    from ragtune.cli import app

    return app


def test_cli_trains_with_mapped_columns_and_classifies(tiny_bert, tmp_path):
    csv = tmp_path / "reviews.csv"
    csv.write_text("body,category\n" + "".join(f"{r['text']},{r['label']}\n" for r in toy_rows(48, 1)))
    out = tmp_path / "clf"
    runner = CliRunner()
    result = runner.invoke(_cli(), ["train", "classifier", "--train", str(csv), "--column", "text=body",
                                    "--column", "label=category", "--model", str(tiny_bert), "--out", str(out),
                                    "--max-steps", "4", "--batch-size", "16", "--lr", "1e-2", "--mode", "probe", "-q"])
    assert result.exit_code == 0, result.output
    assert f"saved probe classifier (3 labels) to {out}" in result.output
    assert json.loads((out / "ragtune_run.json").read_text())["options"]["max_steps"] == 4

    texts = tmp_path / "texts.txt"
    texts.write_text("the cat sat on the mat\n\nvault encryption key\n")
    result = runner.invoke(_cli(), ["classify", "dogs bark", "--file", str(texts), "--model", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 3 and all(line.split("\t")[0] in ("backup", "pets", "security") for line in lines)
    result = runner.invoke(_cli(), ["classify", "dogs bark", "--model", str(out), "--json"])
    assert set(json.loads(result.output)[0]["probabilities"]) == {"backup", "pets", "security"}


def test_cli_user_errors_are_one_line(tiny_bert, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", toy_rows(2, 0) + [{"text": "x", "label": ["a"]}])
    run = subprocess.run(ragtune_command() + ["train", "classifier", "--train", str(bad), "--model", str(tiny_bert),
                                              "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: ") and "bad.jsonl:3" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()
