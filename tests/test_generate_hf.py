"""The hf generator on tiny real models built in fixtures: causal (Llama), seq2seq (T5), LoRA."""
from __future__ import annotations

import logging

import pytest

from ragtune.config import GeneratorConfig
from ragtune.errors import ConfigError, InputError, ModelNotFoundError
from ragtune.generate.base import Generation, Generator, Prompt
from ragtune.generate.hf import HFGenerator
from ragtune.registry import create
from tests.tiny_generators import PROMPT, one_torch_thread, tiny_llama, tiny_lora, tiny_t5  # noqa: F401


def hf(model, **options) -> HFGenerator:
    options.setdefault("max_new_tokens", 12)
    return create("generator", "hf", GeneratorConfig(backend="hf", model=str(model), **options))


@pytest.fixture(scope="module")
def llama(tiny_llama) -> HFGenerator:
    return hf(tiny_llama)


@pytest.fixture(scope="module")
def t5(tiny_t5) -> HFGenerator:
    return hf(tiny_t5)


def test_construction_is_cheap_and_follows_the_contract(tiny_llama):
    generator = HFGenerator(GeneratorConfig(backend="hf", model=str(tiny_llama)))
    assert generator._model is None and generator._tokenizer is None
    assert isinstance(generator, Generator) and generator.name == "hf"
    assert generator.context_window == 256  # the tiny Llama's max_position_embeddings
    assert generator._model is None
    assert HFGenerator(GeneratorConfig(backend="hf", model=str(tiny_llama), context_window=512)).context_window == 512


@pytest.mark.parametrize("which", ["llama", "t5"])
def test_generates_text_deterministically_when_greedy(which, request):
    generator = request.getfixturevalue(which)
    first, second = generator.generate(PROMPT), generator.generate(PROMPT)
    assert first.text.strip() and first == second
    assert first.usage.prompt_tokens == len(generator._input_ids(PROMPT)) > 10
    assert 0 < first.usage.completion_tokens <= 12
    assert first.finish_reason in ("stop", "length")


def test_seq2seq_detected_from_the_model_config(llama, t5):
    assert t5.is_seq2seq and not llama.is_seq2seq
    assert t5.context_window == 2048  # T5 has relative positions: no size in its config
    assert t5.render(PROMPT).startswith("System: Answer using only")
    assert "Assistant:" not in t5.render(PROMPT)


@pytest.mark.parametrize("which", ["llama", "t5"])
def test_stream_pieces_join_to_the_final_generation(which, request):
    generator = request.getfixturevalue(which)
    items = list(generator.stream(PROMPT))
    pieces, final = items[:-1], items[-1]
    assert isinstance(final, Generation) and all(isinstance(piece, str) and piece for piece in pieces)
    assert "".join(pieces) == final.text
    whole = generator.generate(PROMPT)
    assert final.text == whole.text and final.usage == whole.usage and final.finish_reason == whole.finish_reason


def test_stream_stops_generating_when_the_reader_leaves(tiny_llama):
    generator = hf(tiny_llama, max_new_tokens=200)
    stream = generator.stream(PROMPT)
    next(stream)
    stream.close()  # must return promptly and leave no generation thread behind
    import threading

    assert not [t for t in threading.enumerate() if t.name == "ragtune-hf-stream"]


def test_chat_template_is_used_when_the_tokenizer_has_one(llama):
    rendered = llama.render(PROMPT)
    assert rendered.startswith("<s><|system|>\nAnswer using only") and rendered.endswith("<|assistant|>\n")
    assert "<|user|>\nSources:" in rendered


def test_plain_text_prompt_without_chat_template(tiny_llama, tmp_path):
    import shutil

    folder = tmp_path / "no-template"
    shutil.copytree(tiny_llama, folder)
    (folder / "chat_template.jinja").unlink()
    generator = hf(folder)
    assert generator.render(PROMPT).startswith("System: Answer using only")
    assert generator.render(PROMPT).endswith("\n\nAssistant:")
    assert generator.generate(PROMPT).text


def test_template_that_refuses_system_messages_gets_them_merged(tiny_llama, tmp_path):
    import shutil

    folder = tmp_path / "no-system"
    shutil.copytree(tiny_llama, folder)
    template = (folder / "chat_template.jinja").read_text()
    refuse = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    (folder / "chat_template.jinja").write_text(refuse + template)
    rendered = hf(folder).render(PROMPT)
    assert "<|system|>" not in rendered
    assert "<|user|>\nAnswer using only the sources. Cite them as [n].\n\nSources:" in rendered


def test_special_tokens_are_stripped_from_answers(llama):
    text = llama.generate(PROMPT).text
    assert not any(marker in text for marker in ("<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>"))


def test_sampling_uses_temperature(tiny_llama):
    generator = hf(tiny_llama, temperature=1.5, top_p=0.95, max_new_tokens=16)
    texts = {generator.generate(PROMPT).text for _ in range(4)}
    assert len(texts) > 1


def test_lora_adapter_changes_the_output(llama, tiny_llama, tiny_lora):
    adapted = hf(tiny_llama, adapter=str(tiny_lora))
    assert type(adapted.model).__name__ == "PeftModelForCausalLM"
    assert adapted.generate(PROMPT).text != llama.generate(PROMPT).text
    assert adapted.generate(PROMPT) == adapted.generate(PROMPT)


@pytest.mark.parametrize("limit", [1, 5])
def test_max_new_tokens_is_respected(tiny_llama, limit):
    generation = hf(tiny_llama, max_new_tokens=limit).generate(PROMPT)
    assert 0 < generation.usage.completion_tokens <= limit
    assert generation.finish_reason == "length" or generation.usage.completion_tokens < limit


def test_overlong_prompt_warns_and_keeps_the_end(tiny_llama, caplog):
    generator = hf(tiny_llama, max_new_tokens=16)
    question = "which port does the sync daemon listen on? " * 60
    long_prompt = Prompt(question=question, sources=[], messages=[{"role": "user", "content": question}])
    assert generator.count_tokens(question) > generator.context_window
    with caplog.at_level(logging.WARNING, logger="ragtune.generate.hf"):
        generation = generator.generate(long_prompt)
    assert "keeping the last 240" in caplog.text
    assert generation.usage.prompt_tokens == 256 - 16 and generation.text
    assert generator._input_ids(long_prompt)[-3:] == generator.tokenizer(
        generator.render(long_prompt), add_special_tokens=False)["input_ids"][-3:]


def test_count_tokens_uses_the_tokenizer(llama):
    assert llama.count_tokens("") == 0
    assert llama.count_tokens("the sync daemon") == len(llama.tokenizer("the sync daemon")["input_ids"])


def test_missing_model_folder_says_how_to_fix_it(tmp_path):
    generator = hf(tmp_path / "no-such-model")
    with pytest.raises(ModelNotFoundError, match="no such folder.*generator.model"):
        generator.generate(PROMPT)


def test_folder_without_a_model_or_unknown_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="not a loadable transformers model.*local folder"):
        hf(tmp_path).generate(PROMPT)
    with pytest.raises(ModelNotFoundError, match="'someone/unknown-llm' was not found locally.*generator.model"):
        hf("someone/unknown-llm").context_window


def test_missing_or_wrong_adapter_folder(tiny_llama, tmp_path):
    with pytest.raises(ModelNotFoundError, match="generator.adapter .*no such folder"):
        hf(tiny_llama, adapter=str(tmp_path / "missing")).generate(PROMPT)
    with pytest.raises(InputError, match="not a peft adapter folder"):
        hf(tiny_llama, adapter=str(tmp_path)).generate(PROMPT)


def test_config_errors():
    with pytest.raises(ConfigError, match="generator.model is not set"):
        HFGenerator(GeneratorConfig(backend="hf", model=None))
    with pytest.raises(ConfigError, match="generator.dtype"):
        HFGenerator(GeneratorConfig(backend="hf", model="x", dtype="float8"))


def test_no_heavy_imports_at_module_import():
    import subprocess
    import sys

    code = ("import ragtune.generate.hf, ragtune.generate.openai, sys; "
            "print([m for m in ('torch', 'transformers', 'openai') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
