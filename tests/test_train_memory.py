"""The CPU memory check before training: the estimate of one step, the warning with a batch size
that fits, and that the training commands issue it (the free memory read from the system is set
low in one test; the real reading is checked too)."""
from __future__ import annotations

import logging

import pytest

from ragtune.train import common
from ragtune.train.common import TrainOptions, available_memory_bytes, memory_warning, step_memory_bytes
from tests.tiny_encoders import tiny_bert, toy_pairs, write_jsonl  # noqa: F401  (fixture)
from tests.tiny_generators import one_torch_thread  # noqa: F401  (fixture)


@pytest.fixture
def network(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=1)


def test_step_estimate_grows_with_texts_and_length_and_counts_the_optimizer(network):
    weights = sum(p.numel() for p in network.parameters())
    optimizer = step_memory_bytes(network, 0, 64)
    assert optimizer == int(weights * common.OPTIMIZER_BYTES)  # gradient + two AdamW moments per weight
    eight, sixteen = step_memory_bytes(network, 8, 64) - optimizer, step_memory_bytes(network, 16, 64) - optimizer
    assert eight > 0 and sixteen == pytest.approx(2 * eight, abs=2)  # linear in the texts of a step
    # attention grows with the square of the length: doubling it more than doubles the step
    assert step_memory_bytes(network, 8, 128) - optimizer > 2 * eight


def test_no_estimate_for_frozen_layers_or_a_model_it_does_not_know(network):
    for name, parameter in network.base_model.named_parameters():
        parameter.requires_grad = "pooler" in name  # a linear probe: the layers keep no activations
    assert step_memory_bytes(network, 16, 128) is None
    import torch

    assert step_memory_bytes(torch.nn.Linear(4, 2), 16, 128) is None


def test_warning_names_the_need_and_a_batch_that_fits(network):
    options = TrainOptions(batch_size=16, gradient_accumulation=2, max_length=64)
    need = step_memory_bytes(network, 16 * 3, 64)
    assert memory_warning(network, options, texts_per_example=3, free=int(need / common.MEMORY_HEADROOM) + 1) is None
    fits_at_4 = step_memory_bytes(network, 4 * 3, 64)
    free = int(fits_at_4 / common.MEMORY_HEADROOM) + 1  # batch 8 does not fit, 4 does
    assert step_memory_bytes(network, 8 * 3, 64) > common.MEMORY_HEADROOM * free
    message = memory_warning(network, options, texts_per_example=3, free=free, hints=["--mode lora"])
    assert f"about {need / 2**30:.1f} GiB (batch 16 x 3 texts of up to 64 tokens)" in message
    assert "--batch-size 4 --gradient-accumulation 8 (effective batch 32" in message
    assert message.index("--batch-size 4") < message.index("--mode lora") < message.index("a shorter --max-length (now 64)")
    # two processes on one machine need twice as much
    assert memory_warning(network, options, texts_per_example=3, free=int(need / common.MEMORY_HEADROOM) + 1,
                          processes=2) is not None
    # when not even one example fits, only the other remedies are offered
    tight = memory_warning(network, options, texts_per_example=3, free=1)
    assert "--batch-size" not in tight and "a shorter --max-length (now 64)" in tight


def test_free_memory_is_read_from_the_system():
    import psutil

    free = available_memory_bytes()
    assert free is not None and 0 < free <= psutil.virtual_memory().total


def test_reranker_training_warns_with_its_texts_per_query(tiny_bert, tmp_path, monkeypatch, caplog):
    from ragtune.train.reranker import IN_BATCH_NEGATIVES, train_reranker

    pairs = write_jsonl(tmp_path / "pairs.jsonl", toy_pairs(16))
    monkeypatch.setattr(common, "available_memory_bytes", lambda: 1 << 20)  # 1 MiB free
    options = TrainOptions(output_dir=str(tmp_path / "rr"), batch_size=8, max_steps=2, max_length=32, logging_steps=1)
    with caplog.at_level(logging.WARNING, logger="ragtune.train.common"):
        result = train_reranker(pairs, model=str(tiny_bert), options=options, negatives_per_query=3, progress=False)
    texts = 1 + 3 + IN_BATCH_NEGATIVES  # positive, own and mined negatives, in-batch negatives
    warned = [r.getMessage() for r in caplog.records if "training step may need" in r.getMessage()]
    assert len(warned) == 1 and f"(batch 8 x {texts} texts of up to 32 tokens)" in warned[0], warned
    assert (result.output_dir / "config.json").is_file()  # a warning, not a stop


def test_embedder_training_counts_its_columns(tiny_bert, tmp_path, monkeypatch, caplog):
    from ragtune.train.embedder import train_embedder

    pairs = write_jsonl(tmp_path / "pairs.jsonl", toy_pairs(16))  # query, positive, negative
    monkeypatch.setattr(common, "available_memory_bytes", lambda: 1 << 20)
    options = TrainOptions(output_dir=str(tmp_path / "emb"), batch_size=8, max_steps=1, max_length=32)
    with caplog.at_level(logging.WARNING, logger="ragtune.train.common"):
        train_embedder(pairs, model=str(tiny_bert), options=options, progress=False)
    assert any("(batch 8 x 3 texts of up to 32 tokens)" in r.getMessage() for r in caplog.records), caplog.text
