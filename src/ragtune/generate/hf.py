"""Local transformers generator: any causal or seq2seq LM by local folder or HF id, optional LoRA adapter.

>>> generator = HFGenerator(GeneratorConfig(backend="hf", model="models/qwen2.5-0.5b-instruct"))
>>> generator.generate(prompt).text                                    # doctest: +SKIP
'The sync daemon listens on port 7741 [1].'
>>> [piece for piece in generator.stream(prompt)]                      # doctest: +SKIP
['The sync ', 'daemon listens ', 'on port 7741 [1].', Generation(text='The sync daemon ...', ...)]

Nothing heavy is imported or loaded until first use: the model config on `context_window`, the
tokenizer on `count_tokens`, the weights on `generate`/`stream`.
"""
from __future__ import annotations

import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator, Union

from ragtune.config import GeneratorConfig
from ragtune.errors import ConfigError, InputError, ModelNotFoundError, require
from ragtune.generate.base import Generation, Prompt
from ragtune.registry import register
from ragtune.types import Usage

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_WINDOW = 2048  # when neither the config nor the model config says
DTYPES = ("float32", "float16", "bfloat16")


def _dtype_keyword() -> str:
    """from_pretrained's dtype keyword: `dtype` since transformers 4.56, `torch_dtype` before."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"


def _offline() -> bool:
    return any(os.environ.get(var, "").lower() in ("1", "true", "yes", "on")
               for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _looks_like_path(name: str) -> bool:
    """A local path rather than a hub id ('org/name' or 'name')."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


class HFGenerator:
    """A transformers model generating on this machine (CPU or GPU). Loads on first use, then cached."""

    name = "hf"

    def __init__(self, config: GeneratorConfig, embedder: Any = None):
        if not config.model:
            raise ConfigError("generator.model is not set: the hf generator needs a local model folder or "
                              "HF id, e.g. `generator.model: models/Qwen2.5-0.5B-Instruct` in ragtune.yaml.")
        if config.dtype not in ("auto", *DTYPES):
            raise ConfigError(f"generator.dtype '{config.dtype}' is not one of: auto, {', '.join(DTYPES)}.")
        self.config = config
        self._lock = threading.Lock()  # one load even when a server calls from several threads
        self._model_config = None
        self._tokenizer = None
        self._model = None
        self._device = "cpu"

    # --- lazy loading -------------------------------------------------------------------------
    def _from_pretrained(self, loader: Any, **kwargs: Any) -> Any:
        """`loader.from_pretrained(config.model)`: a local folder or the HF cache, then the hub unless offline."""
        name = self.config.model
        path = Path(name).expanduser()
        if not path.exists() and _looks_like_path(name):
            raise ModelNotFoundError(
                f"generator.model '{name}': no such folder. Point generator.model in ragtune.yaml at a local "
                f"folder holding a transformers model (config.json, weights, tokenizer files).")
        source = str(path) if path.exists() else name
        try:
            return loader.from_pretrained(source, local_files_only=True, **kwargs)
        except (OSError, ValueError) as exc:
            error = exc
        if not path.exists() and not _offline():
            try:
                log.info("downloading %s from the Hugging Face hub", name)
                return loader.from_pretrained(source, **kwargs)
            except (OSError, ValueError) as exc:
                error = exc
        where = "is not a loadable transformers model" if path.exists() else "was not found locally"
        raise ModelNotFoundError(
            f"generator model '{name}' {where} and cannot be downloaded here ({_first_line(error)}). "
            f"Point generator.model in ragtune.yaml at a local folder holding the model (config.json, "
            f"weights and tokenizer files, e.g. written by save_pretrained or `hf download --local-dir`).") from None

    @property
    def model_config(self) -> Any:
        """The model's transformers config (AutoConfig only: no weights)."""
        if self._model_config is None:
            from transformers import AutoConfig

            self._model_config = self._from_pretrained(AutoConfig)
        return self._model_config

    @property
    def is_seq2seq(self) -> bool:
        return bool(getattr(self.model_config, "is_encoder_decoder", False))

    @property
    def context_window(self) -> int:
        if self.config.context_window:
            return self.config.context_window
        config = self.model_config
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        for attribute in ("max_position_embeddings", "n_positions"):
            value = getattr(config, attribute, None)
            if isinstance(value, int) and value > 0:
                return value
        return DEFAULT_CONTEXT_WINDOW

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from transformers import AutoTokenizer

            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = self._from_pretrained(AutoTokenizer)
        return self._tokenizer

    @property
    def model(self) -> Any:
        """The weights, on the configured device and dtype, with the adapter applied."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load_model()
        return self._model

    def _load_model(self) -> Any:
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        device, dtype = self._device_and_dtype()
        loader = AutoModelForSeq2SeqLM if self.is_seq2seq else AutoModelForCausalLM
        model = self._from_pretrained(loader, **{_dtype_keyword(): dtype})
        if self.config.adapter:
            model = self._apply_adapter(model)
        self._device = device
        log.info("loaded %s on %s (%s)", self.config.model, device, dtype)
        return model.to(device).eval()

    def _device_and_dtype(self) -> tuple[str, Any]:
        import torch

        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            kind = torch.device(device).type
        except RuntimeError:
            raise ConfigError(f"generator.device '{device}' is not a device; use auto, cpu, cuda or cuda:N.") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"generator.device is '{device}' but no CUDA device is available; use auto or cpu.")
        if self.config.dtype != "auto":
            return device, getattr(torch, self.config.dtype)
        bf16 = kind == "cuda" and torch.cuda.is_bf16_supported()
        return device, torch.bfloat16 if bf16 else torch.float32

    def _apply_adapter(self, model: Any) -> Any:
        peft = require("peft", "LoRA adapters", "train")
        folder = Path(self.config.adapter).expanduser()
        if not folder.is_dir():
            raise ModelNotFoundError(
                f"generator.adapter '{self.config.adapter}': no such folder. Point generator.adapter at a "
                f"folder written by peft's save_pretrained (adapter_config.json + weights), or set it to null.")
        if not (folder / "adapter_config.json").is_file():
            raise InputError(f"generator.adapter '{folder}' is not a peft adapter folder (no adapter_config.json). "
                             f"Point it at the folder a LoRA training run saved.")
        try:
            with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5
                warnings.simplefilter("ignore", FutureWarning)
                return peft.PeftModel.from_pretrained(model, str(folder))
        except (ValueError, RuntimeError, KeyError, OSError) as exc:
            raise InputError(f"generator.adapter '{folder}' cannot be applied to model "
                             f"'{self.config.model}': {_first_line(exc)}") from None

    # --- prompts ------------------------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        """The prompt text the model reads: the chat template's output when the tokenizer has one."""
        return self._render(prompt)[0]

    def _render(self, prompt: Prompt) -> tuple[str, bool]:
        """(text, whether a chat template made it: then it already holds the special tokens)."""
        messages = prompt.messages
        if not self.is_seq2seq and getattr(self.tokenizer, "chat_template", None):
            from jinja2 import TemplateError

            try:
                return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), True
            except TemplateError as exc:  # e.g. templates that refuse a system role (Gemma, Mistral v0.1)
                if not messages or messages[0]["role"] != "system" or len(messages) < 2:
                    raise
                log.debug("chat template refused the system message (%s); merging it into the next one", exc)
                merged = [{**messages[1], "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}]
                text = self.tokenizer.apply_chat_template(merged + messages[2:], add_generation_prompt=True,
                                                          tokenize=False)
                return text, True
        text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
        return (text if self.is_seq2seq else text + "\n\nAssistant:"), False

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def _input_ids(self, prompt: Prompt) -> list[int]:
        """Token ids of the rendered prompt, cut to the last ones that leave room for the answer."""
        text, templated = self._render(prompt)
        ids = self.tokenizer(text, add_special_tokens=not templated, verbose=False)["input_ids"]  # we cut below
        window, answer = self.context_window, self.config.max_new_tokens
        budget = window - answer
        if budget < 1:
            raise ConfigError(f"generator.max_new_tokens ({answer}) leaves no room for the prompt in the "
                              f"model's {window}-token window; lower it or raise generator.context_window.")
        if len(ids) > budget:
            log.warning("prompt is %d tokens but %s reads %d minus %d for the answer: keeping the last %d. "
                        "Lower rag.max_context_tokens or generator.max_new_tokens.",
                        len(ids), self.config.model, window, answer, budget)
            keep = ids[:1] if ids[0] == self.tokenizer.bos_token_id else []  # the model expects its BOS first
            ids = keep + ids[len(ids) - budget + len(keep):]
        return ids

    # --- generation ---------------------------------------------------------------------------
    def _generate_kwargs(self, ids: list[int]) -> dict[str, Any]:
        import torch

        input_ids = torch.tensor([ids], device=self._device)  # (1, T)
        sample = self.config.temperature > 0
        kwargs: dict[str, Any] = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                      max_new_tokens=self.config.max_new_tokens, do_sample=sample)
        if sample:
            kwargs.update(temperature=self.config.temperature, top_p=self.config.top_p, top_k=None)
        else:  # drop sampling defaults a model's generation_config may carry, so greedy is plain greedy
            kwargs.update(temperature=None, top_p=None, top_k=None)
        tokenizer = self.tokenizer
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            kwargs["pad_token_id"] = tokenizer.eos_token_id
        return kwargs

    def _answer_ids(self, prompt_ids: list[int], output: Any) -> list[int]:
        """Generated ids: without the prompt (causal) or the decoder start token (seq2seq)."""
        sequence = output[0].tolist()
        return sequence[1:] if self.is_seq2seq else sequence[len(prompt_ids):]

    def _finish_reason(self, answer_ids: list[int]) -> str:
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
        if answer_ids and answer_ids[-1] in eos:
            return "stop"
        return "length" if len(answer_ids) >= self.config.max_new_tokens else "stop"

    def generate(self, prompt: Prompt) -> Generation:
        import torch

        model = self.model
        ids = self._input_ids(prompt)
        with torch.inference_mode():
            output = model.generate(**self._generate_kwargs(ids))
        answer = self._answer_ids(ids, output)
        text = self.tokenizer.decode(answer, skip_special_tokens=True)
        return Generation(text=text, usage=Usage(prompt_tokens=len(ids), completion_tokens=len(answer)),
                          finish_reason=self._finish_reason(answer))

    def stream(self, prompt: Prompt) -> Iterator[Union[str, Generation]]:
        """Text pieces as the model produces them (generation runs in a thread), then the Generation."""
        import torch
        from transformers import StoppingCriteria, TextIteratorStreamer

        model = self.model
        ids = self._input_ids(prompt)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop = threading.Event()  # set when the consumer stops reading: generation ends at the next token

        class StopWhenAsked(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        result: dict[str, Any] = {}

        def run() -> None:
            try:
                with torch.inference_mode():
                    result["output"] = model.generate(**self._generate_kwargs(ids), streamer=streamer,
                                                      stopping_criteria=[StopWhenAsked()])
            except BaseException as exc:  # re-raised in the caller's thread below
                result["error"] = exc
                streamer.end()

        thread = threading.Thread(target=run, name="ragtune-hf-stream", daemon=True)
        thread.start()
        pieces: list[str] = []
        try:
            for piece in streamer:
                if piece:
                    pieces.append(piece)
                    yield piece
        finally:
            stop.set()
            thread.join()
        if "error" in result:
            raise result["error"]
        answer = self._answer_ids(ids, result["output"])
        yield Generation(text="".join(pieces), usage=Usage(prompt_tokens=len(ids), completion_tokens=len(answer)),
                         finish_reason=self._finish_reason(answer))


register("generator", "hf", HFGenerator)
