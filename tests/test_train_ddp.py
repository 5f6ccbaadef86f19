"""The classifier trains unchanged under a 2-process launch on CPU (torchrun, gloo).

`accelerate launch --cpu --num_processes 2` silently runs one process, so the test uses torchrun
and checks that each rank really saw a world of two.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.tiny_encoders import tiny_bert, toy_data  # noqa: F401  (fixtures)

RANK_SCRIPT = """
import json, os, sys
import torch.distributed as dist
from ragtune.train.classifier import train_classifier
from ragtune.train.common import TrainOptions

train, validation, model, out = sys.argv[1:5]
result = train_classifier(train, validation, validation, model=model, progress=False, options=TrainOptions(
    output_dir=out, max_steps=4, eval_steps=2, batch_size=8, learning_rate=1e-2, max_length=32, logging_steps=1))
report = {"rank": int(os.environ["RANK"]), "world_size": result.world_size,
          "process_group_size": dist.get_world_size() if dist.is_initialized() else 1,
          "backend": dist.get_backend() if dist.is_initialized() else None,
          "test_predictions": result.predictions["test"], "validation_n": result.metrics["validation"]["n"]}
with open(os.path.join(out, f"rank{report['rank']}.json"), "w") as fh:
    json.dump(report, fh)
"""


def test_two_cpu_processes_train_one_classifier(tiny_bert, toy_data, tmp_path):
    script = tmp_path / "train_rank.py"
    script.write_text(RANK_SCRIPT)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(toy_data["train"]), str(toy_data["validation"]), str(tiny_bert), str(out)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr[-4000:]
    reports = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [(r["rank"], r["world_size"], r["process_group_size"]) for r in reports] == [(0, 2, 2), (1, 2, 2)]
    assert reports[0]["backend"] == "gloo"
    # One model trained by both: the same predictions on every rank, each example scored once.
    assert reports[0]["test_predictions"] == reports[1]["test_predictions"] and reports[0]["validation_n"] == 24
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["train"]["global_step"] == 4
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert all((p / "checkpoint_complete.json").is_file() for p in (out / "checkpoints").iterdir())
    assert {f"rng_state_{rank}.pth" for rank in (0, 1)} <= {p.name for p in (out / "checkpoints" / "checkpoint-4").iterdir()}
