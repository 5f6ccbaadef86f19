"""Memory of one CPU training step: ragtune's estimate (`ragtune.train.common.step_memory_bytes`,
which the training commands use to warn before a step that may not fit) against the measured peak.

    python benchmarks/train_memory.py

For each shape (texts per step x tokens per text) a fresh process loads the encoder (default: the
embedded all-MiniLM-L6-v2, with a new one-logit head, as `ragtune train reranker` does), records
its resident memory, runs two full training steps (forward, backward, AdamW) on random token ids
padded to the full length, and reports the growth of its peak resident memory (ru_maxrss). The
result is the ratio estimate / measured per shape: above 1 means the warning errs on the safe side.
Written to benchmarks/results/train-memory.json (figures only).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fail, header, log, write_result  # noqa: E402

SHAPES = ((16, 128), (16, 256), (16, 384), (16, 512), (32, 256), (64, 128), (8, 512))

CHILD = r"""
import json, resource, sys, torch
from transformers import AutoModelForSequenceClassification
from ragtune.train.common import step_memory_bytes
sequences, length, model = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
network = AutoModelForSequenceClassification.from_pretrained(model, num_labels=1)
network.train()
optimizer = torch.optim.AdamW(network.parameters(), lr=1e-5)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
ids = torch.randint(1000, 20000, (sequences, length))
for _ in range(2):
    network(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum().backward()
    optimizer.step()
    optimizer.zero_grad()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before_bytes": before, "peak_bytes": peak, "measured_bytes": peak - before,
                  "estimate_bytes": step_memory_bytes(network, sequences, length),
                  "attention": network.config._attn_implementation}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="encoder folder or HF id (default: the embedded all-MiniLM-L6-v2)")
    parser.add_argument("--out", type=Path, help="result file (default benchmarks/results/train-memory.json)")
    args = parser.parse_args(argv)

    from ragtune.knowledge.embedders import resolve_model_path

    try:
        model = str(resolve_model_path(args.model or "sentence-transformers/all-MiniLM-L6-v2", setting="--model"))
    except Exception as exc:  # a missing model is the user's to fix, not a traceback
        fail(str(exc))
    rows = []
    for sequences, length in SHAPES:
        done = subprocess.run([sys.executable, "-c", CHILD, str(sequences), str(length), model],
                              capture_output=True, text=True)
        if done.returncode:
            fail(f"the step with {sequences} x {length} tokens failed:\n{done.stderr[-2000:]}")
        row = {"sequences": sequences, "tokens": length, **json.loads(done.stdout.strip().splitlines()[-1])}
        row["estimate_over_measured"] = row["estimate_bytes"] / row["measured_bytes"]
        rows.append(row)
        log(f"{sequences:3d} x {length:3d} tokens: measured {row['measured_bytes'] / 2**30:.2f} GiB, "
            f"estimate {row['estimate_bytes'] / 2**30:.2f} GiB (x{row['estimate_over_measured']:.2f})")
    ratios = sorted(r["estimate_over_measured"] for r in rows)
    payload = {**header(argv, {"model": model, "shapes": SHAPES}), "steps": rows,
               "estimate_over_measured": {"min": ratios[0], "median": ratios[len(ratios) // 2], "max": ratios[-1]}}
    path = write_result("train-memory", payload, args.out)
    log(f"estimate / measured: min {ratios[0]:.2f}, median {ratios[len(ratios) // 2]:.2f}, max {ratios[-1]:.2f} -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
