"""Crash safety: a SIGKILL inside a checkpoint save or a Ctrl-C, then --resume, ends with the same
weights as a run that was never interrupted (fixed seeds, CPU, to 1e-6)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragtune.train.classifier import train_classifier
from ragtune.train.common import MARKER, PAUSE_ENV, TrainOptions, latest_checkpoint, read_log
from tests.test_train_classifier import _cli, ragtune_command
from tests.tiny_encoders import tiny_bert, toy_data  # noqa: F401  (fixtures)
from tests.tiny_generators import one_torch_thread  # noqa: F401  (fixture: module scope, so `reference` runs on it too)

# 96 rows in batches of 16: 6 steps per epoch, so 8 steps cross an epoch boundary.
FLAGS = {"max_steps": 8, "save_steps": 2, "batch_size": 16, "learning_rate": 1e-2, "warmup_ratio": 0.0,
         "max_length": 32, "logging_steps": 1, "seed": 7}


def options(out: Path, **changes) -> TrainOptions:
    return TrainOptions(output_dir=str(out), **{**FLAGS, **changes})


def cli_flags() -> list[str]:
    return [part for key, value in FLAGS.items() for part in ("--" + key.replace("_", "-"), str(value))]


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def reference(tiny_bert, toy_data, tmp_path_factory) -> dict:
    """Final weights of the uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "out"
    train_classifier(toy_data["train"], model=str(tiny_bert), options=options(out), progress=False)
    return weights(out)


def start_training(tiny_bert, toy_data, out: Path, pause: str, logs: Path) -> subprocess.Popen:
    env = {**os.environ, PAUSE_ENV: pause, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = ragtune_command() + ["train", "classifier", "--train", str(toy_data["train"]), "--model", str(tiny_bert),
                                   "--out", str(out), "-q"] + cli_flags()
    return subprocess.Popen(command, env=env, stdout=open(logs / "stdout", "w"), stderr=open(logs / "stderr", "w"))


def wait_for(path: Path, process: subprocess.Popen, logs: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path.name} never appeared:\n{(logs / 'stderr').read_text()[-3000:]}")
        time.sleep(0.05)


def resume_and_compare(tiny_bert, toy_data, out: Path, reference: dict) -> None:
    train_classifier(toy_data["train"], model=str(tiny_bert), options=options(out, resume=True), progress=False)
    assert max_difference(weights(out), reference) <= 1e-6
    steps = [event["step"] for event in read_log(out / "train_log.jsonl") if "loss" in event]
    assert steps == sorted(set(steps)) and steps[-1] == 8  # no step logged twice after the resume


def test_sigkill_during_a_save_then_resume_gives_the_same_weights(tiny_bert, toy_data, reference, tmp_path):
    out = tmp_path / "out"
    process = start_training(tiny_bert, toy_data, out, pause="6:120", logs=tmp_path)
    half_saved = out / "checkpoints" / "checkpoint-6"
    wait_for(half_saved, process, tmp_path)  # renamed into place, marker not yet written: kill now
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not (half_saved / MARKER).exists() and (out / "checkpoints" / "checkpoint-4" / MARKER).is_file()
    assert not (out / "model.safetensors").exists()

    resume_and_compare(tiny_bert, toy_data, out, reference)


def test_ctrl_c_saves_a_checkpoint_and_resume_gives_the_same_weights(tiny_bert, toy_data, reference, tmp_path,
                                                                     monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv(PAUSE_ENV, "2:2")  # Ctrl-C arrives inside the save of checkpoint-2: that save still completes

    def press_ctrl_c():
        deadline = time.monotonic() + 120
        while not (out / "checkpoints" / "checkpoint-2").exists():
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    result = CliRunner().invoke(_cli(), ["train", "classifier", "--train", str(toy_data["train"]), "--model",
                                         str(tiny_bert), "--out", str(out), "-q"] + cli_flags())
    assert result.exit_code == 130, result.output
    assert "Ctrl-C at step 3" in result.output and "--resume" in result.output
    assert [p.name for p in sorted((out / "checkpoints").glob("checkpoint-*"))] == ["checkpoint-2", "checkpoint-3"]
    assert all((p / MARKER).is_file() for p in (out / "checkpoints").glob("checkpoint-*"))

    resume_and_compare(tiny_bert, toy_data, out, reference)


def test_latest_checkpoint_skips_and_removes_incomplete_ones(tmp_path):
    for name, complete in (("checkpoint-2", True), ("checkpoint-10", True), ("checkpoint-12", False), (".staging-14", False)):
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / MARKER).write_text(json.dumps({"step": int(name.split("-")[1])}))
    assert latest_checkpoint(tmp_path, clean=False) == tmp_path / "checkpoint-10"
    assert (tmp_path / "checkpoint-12").exists()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-10"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-2"]
