"""Tiny real-architecture generators built here from configs, with tokenizers trained here: no download.

>>> from tests.tiny_generators import PROMPT, one_torch_thread, tiny_llama  # noqa: F401  (fixtures)
>>> def test_answer(tiny_llama):                                              # doctest: +SKIP
...     HFGenerator(GeneratorConfig(backend="hf", model=str(tiny_llama), max_new_tokens=8)).generate(PROMPT)

`tiny_llama`, `tiny_t5` and `tiny_lora` are session fixtures returning model folders; importing
`one_torch_thread` into a test module runs its tests on one torch thread (faster for tiny models).

Weights are random (seeded), so the text is gibberish, but every code path (tokenizer, chat template,
generate, streaming, LoRA) runs for real on CPU in a second or two.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from ragtune.generate.base import Prompt

SENTENCES = [
    "the sync daemon listens on port 7741", "backups run daily at three in the morning",
    "restore a backup archive with the restore command", "vault encryption uses a master key",
    "single sign on supports saml and oidc", "rate limits apply per token per minute",
    "webhooks are signed with a secret", "answer the question using only the sources",
    "cite each source you use as [1] or [2]", "if the sources do not answer, say you do not know",
    "which port does the sync daemon listen on?", "how often do backups run?",
    "the quick brown fox jumps over the lazy dog", "Models read tokens; tokens are pieces of words.",
    "System: User: Assistant: Question: Sources:", "numbers 0 1 2 3 4 5 6 7 8 9 10 100 2024",
]
CORPUS = [f"{a} {b}" for a in SENTENCES for b in SENTENCES[:12]]  # a few hundred lines

# A question as the RAG pipeline would send it: system rules, then sources and question.
PROMPT = Prompt(
    question="Which port does the sync daemon listen on?",
    sources=[],
    messages=[{"role": "system", "content": "Answer using only the sources. Cite them as [n]."},
              {"role": "user", "content": "Sources:\n[1] the sync daemon listens on port 7741\n\n"
                                          "Question: which port does the sync daemon listen on?"}],
)

# A minimal chat format: role markers are special tokens, so they are stripped from answers.
LLAMA_SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _llama_tokenizer():
    """Byte-level BPE (GPT-2 style: every string round-trips), with a chat template."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(CORPUS, vocab_size=420, min_frequency=2, special_tokens=LLAMA_SPECIAL,
                                show_progress=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=trainer._tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", additional_special_tokens=LLAMA_SPECIAL[4:], model_max_length=256,
        clean_up_tokenization_spaces=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _t5_tokenizer():
    """Unigram (SentencePiece style) with T5's ids: <pad>=0, </s>=1, <unk>=2; inputs end with </s>."""
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    trainer = SentencePieceUnigramTokenizer()
    trainer.train_from_iterator(CORPUS, vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"],
                                unk_token="<unk>", show_progress=False)
    backend = trainer._tokenizer
    backend.post_processor = TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", model_max_length=512, clean_up_tokenization_spaces=False)


def build_tiny_llama(folder: Path, positions: int = 256) -> Path:
    """A 2-layer Llama causal LM (hidden 32, `positions` positions) and its tokenizer, saved in `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _llama_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
        initializer_range=0.5)  # wide init: varied text instead of one token repeated
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def build_tiny_t5(folder: Path, initializer_factor: float = 5.0) -> Path:
    """A 2+2-layer T5 seq2seq model (d_model 32) and its tokenizer, saved in `folder`. The default wide
    init gives varied untrained text; 1.0 (T5's own) trains faster."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = _t5_tokenizer()
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
        num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        initializer_factor=initializer_factor)  # wide init: varied text instead of one token repeated
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def build_tiny_lora(base: Path, folder: Path) -> Path:
    """A LoRA adapter (q_proj, v_proj) for the tiny Llama at `base`, with B perturbed so it matters."""
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base))
    with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                      task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # B starts at zero (the adapter is a no-op); make it a real change
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    peft_model.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """Folder of the tiny Llama causal LM (with chat template)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    """Folder of the tiny T5 seq2seq model."""
    return build_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="session")
def tiny_lora(tiny_llama, tmp_path_factory) -> Path:
    """Folder of a LoRA adapter for `tiny_llama`."""
    return build_tiny_lora(tiny_llama, tmp_path_factory.mktemp("tiny-lora"))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run several times faster on one thread than on contended ones; restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# A learnable SFT toy task: each question has its own answer, so the model must read the question.
SFT_ANSWERS = {
    "which port does the sync daemon listen on?": "the sync daemon listens on port 7741",
    "how often do backups run?": "backups run daily at three in the morning",
    "how do I restore a backup?": "restore a backup archive with the restore command",
}
SFT_SYSTEM = "answer the question using only the sources"


def sft_rows(n: int, seed: int, fmt: str = "messages") -> list[dict]:
    """`n` rows of the toy task: `messages` (some with a system message) or `prompt`/`completion`."""
    import random

    rng = random.Random(seed)
    questions = sorted(SFT_ANSWERS)
    rows = []
    for i in range(n):
        question = questions[i % len(questions)]
        if fmt == "prompt_completion":
            rows.append({"prompt": question, "completion": SFT_ANSWERS[question]})
            continue
        system = [{"role": "system", "content": SFT_SYSTEM}] if rng.random() < 0.5 else []
        rows.append({"messages": system + [{"role": "user", "content": question},
                                           {"role": "assistant", "content": SFT_ANSWERS[question]}]})
    return rows


def write_sft_task(folder: Path, n_train: int = 48, n_validation: int = 12, fmt: str = "messages") -> dict[str, Path]:
    """train.jsonl and validation.jsonl of the SFT toy task in `folder`."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, n, seed in (("train", n_train, 1), ("validation", n_validation, 2)):
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(row) + "\n" for row in sft_rows(n, seed, fmt)), encoding="utf-8")
    return paths


@pytest.fixture(scope="session")
def sft_task(tmp_path_factory) -> dict[str, Path]:
    """train/validation JSONL of the SFT toy task (chat `messages`)."""
    return write_sft_task(tmp_path_factory.mktemp("sft-task"))
