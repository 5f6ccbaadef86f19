"""`ragtune train sft` and `ragtune train merge` on a tiny Llama and a tiny T5: the loss is on the
answer tokens only, the models learn a toy task, plug into the hf generator, merge exactly, resume
after a SIGKILL to the same weights, train in two processes, and bad data fails with line numbers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragtune.config import GeneratorConfig
from ragtune.errors import ConfigError, InputError
from ragtune.generate.base import Prompt
from ragtune.train.common import MARKER, PAUSE_ENV, LoraOptions, TrainOptions, read_log
from ragtune.train.sft import merge_adapter, parse_layers, train_sft
from ragtune.train.sft_data import IGNORE, causal_example, plain_text, seq2seq_example
from tests.test_train_classifier import _cli, ragtune_command
from tests.test_train_resume import max_difference, wait_for
from tests.tiny_generators import (CHAT_TEMPLATE, PROMPT, SFT_ANSWERS, build_tiny_t5, one_torch_thread, sft_rows,  # noqa: F401
                                   sft_task, tiny_llama, tiny_lora, write_sft_task)

ROOT = Path(__file__).resolve().parents[1]
CONVERSATION = [{"role": "system", "content": "answer the question using only the sources"},
                {"role": "user", "content": "which port does the sync daemon listen on?"},
                {"role": "assistant", "content": "port 7741"},
                {"role": "user", "content": "how often do backups run?"},
                {"role": "assistant", "content": "backups run daily"}]


def fast(out: Path, **changes) -> TrainOptions:
    """Seconds-long runs on the toy task (48 rows, batch 8: 6 steps per epoch)."""
    values = dict(output_dir=str(out), batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, max_steps=12,
                  eval_steps=6, logging_steps=2, max_length=64, seed=0)
    return TrainOptions(**{**values, **changes})


def question(text: str) -> Prompt:
    return Prompt(question=text, sources=[], messages=[{"role": "user", "content": text}])


def hf(**settings):
    from ragtune.generate.hf import HFGenerator

    return HFGenerator(GeneratorConfig(backend="hf", max_new_tokens=12, **settings))


@pytest.fixture(scope="module")
def trainable_t5(tmp_path_factory) -> Path:
    """The tiny T5 with T5's own initialisation (the wide one of `tiny_t5` trains slowly)."""
    return build_tiny_t5(tmp_path_factory.mktemp("t5-trainable"), initializer_factor=1.0)


@pytest.fixture(scope="module")
def lora_run(tiny_llama, sft_task, tmp_path_factory):
    """A LoRA SFT run of the tiny Llama on the toy task."""
    out = tmp_path_factory.mktemp("lora") / "out"
    result = train_sft(sft_task["train"], sft_task["validation"], model=str(tiny_llama), options=fast(out, max_steps=24),
                       lora=LoraOptions(dropout=0.0), progress=False)
    return result


# ---------------------------------------------------------------- the loss is on the answers only


def test_loss_covers_the_assistant_turns_and_their_end_of_turn_only(tiny_llama):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    example = causal_example(tokenizer, CONVERSATION)
    assert example.input_ids == tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True)["input_ids"]
    learned = tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE])
    assert learned == "port 7741</s>\nbackups run daily</s>\n"  # both answers with their end-of-turn, nothing else
    assert all(label in (IGNORE, token) for token, label in zip(example.input_ids, example.labels))
    generator = hf(model=str(tiny_llama))
    asked = Prompt(question="", sources=[], messages=CONVERSATION[:2])
    prompt_ids = generator._input_ids(asked)  # what the hf generator feeds the model before it answers
    assert example.input_ids[:len(prompt_ids)] == prompt_ids and example.labels[len(prompt_ids) - 1] == IGNORE
    assert example.labels[len(prompt_ids)] != IGNORE

    # Without a chat template: the `Role: text` prompt the hf generator writes, and an end-of-sequence to stop on.
    tokenizer.chat_template = None
    generator._tokenizer = tokenizer
    assert generator.render(PROMPT) == plain_text(PROMPT.messages, add_generation_prompt=True)
    plain = causal_example(tokenizer, CONVERSATION[:3])
    prompt_ids = generator._input_ids(asked)
    assert plain.input_ids[:len(prompt_ids)] == prompt_ids and set(plain.labels[:len(prompt_ids)]) == {IGNORE}
    assert tokenizer.decode([t for t, label in zip(plain.input_ids, plain.labels) if label != IGNORE]) == " port 7741</s>"

    raw = causal_example(tokenizer, prompt="Q: 2+2?\nA:", completion=" 4")
    assert tokenizer.decode([t for t, label in zip(raw.input_ids, raw.labels) if label != IGNORE]) == " 4</s>"

    # A template that refuses a system role (like Gemma's): the system text joins the first user turn, as in the hf generator.
    tokenizer.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
                               + CHAT_TEMPLATE)
    merged = causal_example(tokenizer, CONVERSATION[:3])
    assert tokenizer.decode(merged.input_ids).startswith("<s><|user|>\nanswer the question using only the sources\n\nwhich port")
    assert tokenizer.decode([t for t, label in zip(merged.input_ids, merged.labels) if label != IGNORE]) == "port 7741</s>\n"


def test_seq2seq_reads_the_conversation_and_learns_the_last_answer(trainable_t5):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(trainable_t5))
    example = seq2seq_example(tokenizer, CONVERSATION)
    source = tokenizer.decode(example.input_ids, skip_special_tokens=True)
    assert source == tokenizer.decode(tokenizer(hf(model=str(trainable_t5)).render(Prompt(
        question="", sources=[], messages=CONVERSATION[:4])))["input_ids"], skip_special_tokens=True)
    assert tokenizer.decode(example.labels, skip_special_tokens=True) == "backups run daily"
    assert example.labels[-1] == tokenizer.eos_token_id


# ---------------------------------------------------------------- training


def test_lora_sft_learns_and_its_adapter_plugs_into_the_hf_generator(lora_run, tiny_llama):
    out = lora_run.output_dir
    losses = [event["loss"] for event in read_log(out / "train_log.jsonl") if "loss" in event]
    assert lora_run.metrics["validation"]["loss"] < 0.75 * losses[0], losses  # the loss goes down
    assert 0 < lora_run.metrics["trainable_share"] < 0.2 and lora_run.metrics["train"]["train_tokens_per_second"] > 0
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md", "metrics.json",
            "loss_curve.png", "train_log.jsonl", "ragtune_run.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "config.json").exists()  # an adapter, not a model
    assert all((c / MARKER).is_file() for c in (out / "checkpoints").glob("checkpoint-*"))
    assert not list((out / "checkpoints").glob("README.md"))  # no trl card in the checkpoints
    card = (out / "README.md").read_text()
    assert "SFT LoRA adapter (lora)" in card and str(tiny_llama) in card and "adapter:" in card

    base, adapted = hf(model=str(tiny_llama)), hf(model=str(tiny_llama), adapter=str(out))
    answers = [adapted.generate(question(q)).text for q in sorted(SFT_ANSWERS)]
    assert answers != [base.generate(question(q)).text for q in sorted(SFT_ANSWERS)]


def test_full_sft_of_a_causal_lm_learns_the_task(tiny_llama, sft_task, tmp_path):
    out = tmp_path / "full"
    result = train_sft(sft_task["train"], sft_task["validation"], model=str(tiny_llama), mode="full",
                       options=fast(out, max_steps=30, eval_steps=10), progress=False)
    assert result.metrics["validation"]["loss"] < 0.5 and result.metrics["trainable_share"] == 1.0
    generator = hf(model=str(out))  # a plain transformers folder
    assert [generator.generate(question(q)).text for q in sorted(SFT_ANSWERS)] == [SFT_ANSWERS[q] for q in sorted(SFT_ANSWERS)]


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_seq2seq_sft_learns(mode, trainable_t5, tmp_path):
    task = write_sft_task(tmp_path / "data", fmt="prompt_completion")
    out = tmp_path / mode
    result = train_sft(task["train"], task["validation"], model=str(trainable_t5), mode=mode,
                       options=fast(out, learning_rate=3e-2), progress=False)
    losses = [event["loss"] for event in read_log(out / "train_log.jsonl") if "loss" in event]
    assert result.metrics["seq2seq"] and result.metrics["validation"]["loss"] < 0.75 * losses[0], losses
    generator = hf(model=str(out)) if mode == "full" else hf(model=str(trainable_t5), adapter=str(out))
    assert generator.generate(question("how often do backups run?")).text.strip()


def test_packing_trains_each_example_on_its_own(tiny_llama, sft_task, tmp_path):
    # All 12 rows in one step: packed into one sequence, or padded into a batch of 12. With per-example
    # attention the first loss (before any update) is the same mean over the same answer tokens.
    first = {}
    for packing in (False, True):
        out = tmp_path / f"packing-{packing}"
        train_sft(sft_task["validation"], model=str(tiny_llama), mode="full", packing=packing, progress=False,
                  options=fast(out, max_steps=1, batch_size=12, max_length=512, logging_steps=1))
        first[packing] = next(event["loss"] for event in read_log(out / "train_log.jsonl") if "loss" in event)
    assert first[True] == pytest.approx(first[False], rel=1e-4)


def test_partial_fine_tuning_trains_only_the_chosen_layers(tiny_llama, sft_task, tmp_path):
    from safetensors.torch import load_file

    before = load_file(str(tiny_llama / "model.safetensors"))
    out = tmp_path / "top-layer"
    train_sft(sft_task["train"], model=str(tiny_llama), mode="full", train_layers="1", progress=False,
              options=fast(out, max_steps=2))
    after = load_file(str(out / "model.safetensors"))
    changed = {name for name in before if not (before[name] == after[name]).all()}
    assert changed and all(name.startswith("model.layers.1.") for name in changed), sorted(changed)

    out = tmp_path / "lora-above-0"
    result = train_sft(sft_task["train"], model=str(tiny_llama), freeze_layers=1, progress=False,
                       options=fast(out, max_steps=2))
    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert adapter and all(".layers.1." in name for name in adapter) and result.metrics["trainable_parameters"] > 0

    assert parse_layers("0,2-4") == [0, 2, 3, 4]
    for bad in ({"train_layers": "2"}, {"train_layers": "1-x"}, {"freeze_layers": 2},
                {"freeze_layers": 0, "train_layers": "1"}):
        with pytest.raises(ConfigError):
            train_sft(sft_task["train"], model=str(tiny_llama), progress=False, options=fast(tmp_path / "bad"), **bad)
    assert not (tmp_path / "bad").exists()


def test_qlora_without_cuda_says_what_to_do(tiny_llama, sft_task, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="NVIDIA GPU with CUDA.*--mode lora"):
        train_sft(sft_task["train"], model=str(tiny_llama), mode="qlora", options=fast(tmp_path / "q"), progress=False)
    assert not (tmp_path / "q").exists()


# ---------------------------------------------------------------- merge


def test_merged_model_generates_exactly_what_base_plus_adapter_generates(tiny_llama, tiny_lora, tmp_path):
    from transformers import AutoModelForCausalLM

    merged = merge_adapter(tiny_lora, tmp_path / "merged")
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {p.name for p in merged.iterdir()}
    assert not (merged / "adapter_config.json").exists() and not list(tmp_path.glob(".merged*"))
    AutoModelForCausalLM.from_pretrained(str(merged))  # plain transformers, no peft

    prompts = [PROMPT] + [question(q) for q in sorted(SFT_ANSWERS)]
    adapted, folded, base = hf(model=str(tiny_llama), adapter=str(tiny_lora)), hf(model=str(merged)), hf(model=str(tiny_llama))
    assert [folded.generate(p).text for p in prompts] == [adapted.generate(p).text for p in prompts]
    assert [base.generate(p).text for p in prompts] != [adapted.generate(p).text for p in prompts]  # the adapter matters

    with pytest.raises(InputError, match="not empty"):
        merge_adapter(tiny_lora, merged)
    with pytest.raises(InputError, match="not a LoRA adapter"):
        merge_adapter(tiny_llama, tmp_path / "other")


# ---------------------------------------------------------------- the CLI, bad data


def test_cli_trains_on_the_example_data_then_merges(tiny_llama, tmp_path):
    out, merged = tmp_path / "adapter", tmp_path / "merged"
    result = CliRunner().invoke(_cli(), ["train", "sft", "--train", str(ROOT / "examples" / "train" / "sft.jsonl"),
                                         "--model", str(tiny_llama), "--out", str(out), "--max-steps", "2",
                                         "--batch-size", "8", "--max-length", "256", "-q"])
    assert result.exit_code == 0, result.output
    assert "saved LoRA adapter" in result.output and f"adapter: {out}" in result.output
    run = json.loads((out / "ragtune_run.json").read_text())
    assert run["options"]["learning_rate"] == 2e-4 and run["data"]["train"]["rows"] == 42
    result = CliRunner().invoke(_cli(), ["train", "merge", "--adapter", str(out), "--out", str(merged)])
    assert result.exit_code == 0, result.output
    assert (merged / "model.safetensors").is_file() and "Merged" in (merged / "README.md").read_text()


def test_bad_data_fails_with_line_numbers_and_writes_nothing(tiny_llama, tmp_path):
    rows = sft_rows(4, 0)
    lines = [json.dumps(row) for row in rows]
    lines[1] = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]})
    lines[2] = "{not json"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with pytest.raises(InputError) as caught:
        train_sft(bad, model=str(tiny_llama), options=fast(out), progress=False)
    message = str(caught.value)
    assert f"{bad}:2: field 'messages' has role 'robot'" in message and f"{bad}:3: not valid JSON" in message
    assert not out.exists()

    opening = tmp_path / "opening.jsonl"  # an assistant turn with no prompt before it
    opening.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"messages": [{"role": "assistant", "content": "hello"}]}) + "\n")
    with pytest.raises(InputError, match=f"{opening}:2: no assistant message after a user"):
        train_sft(opening, model=str(tiny_llama), options=fast(out), progress=False)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"text": "great", "label": "pos"}) + "\n")
    with pytest.raises(InputError, match="chat `messages` or `prompt`/`completion`.*classification"):
        train_sft(labels, model=str(tiny_llama), options=fast(out), progress=False)
    assert not out.exists()

    run = subprocess.run(ragtune_command() + ["train", "sft", "--train", str(bad), "--model", str(tiny_llama),
                                              "--out", str(out)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 2 and run.stderr.startswith("error: ") and "bad.jsonl:2" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and not out.exists()


# ---------------------------------------------------------------- crash safety and processes

RESUME_FLAGS = {"max_steps": 8, "save_steps": 2, "batch_size": 8, "learning_rate": 1e-2, "warmup_ratio": 0.0,
                "max_length": 64, "logging_steps": 1, "seed": 7}


# ~16 s: a subprocess that imports torch, transformers and trl, then a resumed run
def test_sigkill_during_a_save_then_resume_gives_the_same_adapter(tiny_llama, sft_task, tmp_path):
    from safetensors.torch import load_file

    def run(out: Path, resume: bool = False) -> dict:
        train_sft(sft_task["train"], model=str(tiny_llama), progress=False,
                  options=TrainOptions(output_dir=str(out), resume=resume, **RESUME_FLAGS))
        return load_file(str(out / "adapter_model.safetensors"))

    reference = run(tmp_path / "reference")
    out = tmp_path / "out"
    flags = [part for key, value in RESUME_FLAGS.items() for part in ("--" + key.replace("_", "-"), str(value))]
    env = {**os.environ, PAUSE_ENV: "6:120", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(ragtune_command() + ["train", "sft", "--train", str(sft_task["train"]), "--model",
                                                    str(tiny_llama), "--out", str(out), "-q"] + flags,
                               env=env, stdout=open(tmp_path / "stdout", "w"), stderr=open(tmp_path / "stderr", "w"))
    half_saved = out / "checkpoints" / "checkpoint-6"
    wait_for(half_saved, process, tmp_path)  # renamed into place, marker not yet written: kill now
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not (half_saved / MARKER).exists() and (out / "checkpoints" / "checkpoint-4" / MARKER).is_file()
    assert not (out / "adapter_model.safetensors").exists()

    assert max_difference(run(out, resume=True), reference) <= 1e-6
    steps = [event["step"] for event in read_log(out / "train_log.jsonl") if "loss" in event]
    assert steps == sorted(set(steps)) and steps[-1] == 8


RANK_SCRIPT = """
import json, os, sys
import torch.distributed as dist
from ragtune.train.sft import train_sft
from ragtune.train.common import TrainOptions

train, validation, model, out = sys.argv[1:5]
result = train_sft(train, validation, model=model, progress=False, options=TrainOptions(
    output_dir=out, max_steps=4, eval_steps=2, batch_size=4, learning_rate=1e-2, max_length=64, logging_steps=1))
report = {"rank": int(os.environ["RANK"]), "world_size": result.world_size,
          "process_group_size": dist.get_world_size() if dist.is_initialized() else 1,
          "backend": dist.get_backend() if dist.is_initialized() else None,
          "validation_loss": result.metrics["validation"]["loss"]}
with open(os.path.join(out, f"rank{report['rank']}.json"), "w") as fh:
    json.dump(report, fh)
"""


# ~18 s: two torchrun processes that each import torch, transformers and trl
def test_two_cpu_processes_train_one_adapter(tiny_llama, sft_task, tmp_path):
    script = tmp_path / "train_rank.py"
    script.write_text(RANK_SCRIPT)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(sft_task["train"]), str(sft_task["validation"]), str(tiny_llama), str(out)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-4000:]
    reports = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [(r["rank"], r["world_size"], r["process_group_size"]) for r in reports] == [(0, 2, 2), (1, 2, 2)]
    assert reports[0]["backend"] == "gloo" and reports[0]["validation_loss"] == reports[1]["validation_loss"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["train"]["global_step"] == 4
    assert (out / "adapter_model.safetensors").is_file()
    assert {f"rng_state_{rank}.pth" for rank in (0, 1)} <= {p.name for p in (out / "checkpoints" / "checkpoint-4").iterdir()}
