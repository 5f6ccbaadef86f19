"""Generative supervised fine-tuning (SFT) of a causal LM (Llama, Mistral, Qwen, GPT-style) or a
seq2seq LM (T5-style) on chat `messages` or `prompt`/`completion` rows, with the loss on the
answer tokens only, in one of three modes:

- `lora`:  low-rank adapters (peft) on the attention projections (or `--lora-target` layers);
           the output folder is the adapter, which the hf generator applies to the base model.
- `qlora`: the same on a 4-bit (NF4) base model; needs CUDA and bitsandbytes.
- `full`:  every weight (or, with `freeze_layers` / `train_layers`, some layers) is trained.

>>> train_sft("sft.jsonl", model="models/Qwen2.5-0.5B-Instruct", options=TrainOptions(output_dir="m"))  # doctest: +SKIP
>>> # then in ragtune.yaml: generator: {backend: hf, model: models/Qwen2.5-0.5B-Instruct, adapter: m}

Causal LMs train with trl's SFTTrainer on our own token ids and labels (sft_data.py: the answer
spans of any chat template, not only the templates trl can patch), which adds optional packing
(best-fit, with per-sequence attention); seq2seq models train with transformers' Trainer, since
trl's SFTTrainer handles decoder-only models only. `merge_adapter` folds a LoRA adapter into its
base model as a plain transformers folder.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from ragtune.errors import ConfigError, InputError, require
from ragtune.train.common import (CHECKPOINTS, RUN_FILE, LoraOptions, TrainOptions, atomic_trainer, check_resumable,
                                  data_fingerprint, lora_target_modules, open_run_folder,
                                  run_training, train_summary, write_json_atomic, write_model_card)

log = logging.getLogger(__name__)

MODES = ("lora", "qlora", "full")
FORMATS = ("messages", "prompt_completion")
DEFAULT_LEARNING_RATE = {"lora": 2e-4, "qlora": 2e-4, "full": 2e-5}
_STACK_NAMES = ("layers", "h", "block", "blocks", "layer")  # transformer block lists, by module name


class SFTResult(NamedTuple):
    output_dir: Path
    mode: str
    metrics: dict
    """{"train": {...}, "validation": {"loss", "perplexity", "n"}, "data": {...}}."""
    world_size: int
    """Processes that trained together (2 under `torchrun --nproc_per_node 2`)."""


# ---------------------------------------------------------------- data


def _load_split(source: Any, fmt: str | None, columns: dict | None):
    from ragtune.train.data import load_examples

    if source is None:
        return None
    examples = load_examples(source, fmt, columns)
    if examples.format not in FORMATS:
        raise InputError(f"{examples.source}: `train sft` learns from chat `messages` or `prompt`/`completion` rows, "
                         f"but this is {examples.format} data. Convert it, or map columns with --column "
                         f"prompt=COLUMN --column completion=COLUMN")
    return examples


def encode_examples(examples, tokenizer, *, seq2seq: bool, max_length: int, chat_template: bool = True) -> list[dict]:
    """Token ids and labels per row ({"input_ids", "labels"}). A row with no assistant turn after a
    prompt fails with its line; a row whose answer lies wholly past `max_length` is dropped with a
    warning naming its line (InputError when none is left)."""
    from jinja2 import TemplateError

    from ragtune.train.sft_data import causal_example, has_answer, row_messages, seq2seq_example, truncate

    encoded, unanswerable, cut = [], [], []
    for row, line in zip(examples.rows, examples.lines):
        plain = examples.format == "prompt_completion" and not chat_template
        try:
            if seq2seq:
                example = (seq2seq_example(tokenizer, prompt=row["prompt"], completion=row["completion"]) if plain
                           else seq2seq_example(tokenizer, row_messages(row, examples.format)))
            else:
                example = (causal_example(tokenizer, prompt=row["prompt"], completion=row["completion"]) if plain
                           else causal_example(tokenizer, row_messages(row, examples.format), use_template=chat_template))
        except TemplateError as exc:
            raise InputError(f"{examples.source}:{line}: the model's chat template refuses this conversation "
                             f"({exc}); fix the row (e.g. alternate user and assistant turns) or train with "
                             f"--no-chat-template") from None
        if not has_answer(example):
            messages = row_messages(row, examples.format)
            if not seq2seq and any(m["role"] == "assistant" for m in messages[1:]):
                raise ConfigError(f"{examples.source}:{line}: the model's chat template does not render this "
                                  f"conversation one turn after another, so its answer tokens cannot be found; "
                                  f"train with --no-chat-template or give the tokenizer a template that does")
            unanswerable.append(line)
            continue
        short = truncate(example, max_length)
        if not has_answer(short) or (seq2seq and not short.input_ids):
            cut.append(line)
            continue
        encoded.append({"input_ids": short.input_ids, "labels": short.labels})
    name = examples.source
    if unanswerable:
        shown = "\n".join(f"  {name}:{line}: no assistant message after a user or system message: nothing to learn; "
                          f"start the conversation with a user message" for line in unanswerable[:10])
        more = f"\n  ... and {len(unanswerable) - 10} more" if len(unanswerable) > 10 else ""
        raise InputError(f"{name}: {len(unanswerable)} rows without an answer to learn; fix them and try again:"
                         f"\n{shown}{more}")
    if cut:
        lines = ", ".join(map(str, cut[:10])) + (f" and {len(cut) - 10} more" if len(cut) > 10 else "")
        if not encoded:
            raise InputError(f"{name}: every row's answer starts after --max-length {max_length} tokens (lines {lines}): "
                             f"raise --max-length")
        log.warning("%s: %d rows dropped: their answer starts after --max-length %d tokens (lines %s)",
                    name, len(cut), max_length, lines)
    return encoded


# ---------------------------------------------------------------- layers


def parse_layers(spec: str) -> list[int]:
    """Layer indices from '4', '0,2' or '4-7' (inclusive ranges).

    >>> parse_layers("0,2-4")
    [0, 2, 3, 4]
    """
    out: set[int] = set()
    for part in (p.strip() for p in str(spec).split(",")):
        low, sep, high = part.partition("-")
        if not low.isdigit() or (sep and not high.isdigit()) or (sep and int(high) < int(low)):
            raise ConfigError(f"--train-layers '{spec}': give layer numbers from 0 and ranges, e.g. 0,1 or 10-11")
        out.update(range(int(low), int(high if sep else low) + 1))
    return sorted(out)


def layer_stacks(model) -> list[tuple[str, Any]]:
    """(name, ModuleList) of the model's transformer blocks: one stack for a decoder, the encoder's
    and the decoder's for a seq2seq model (lists nested inside a block are not stacks)."""
    import torch

    found = [(name, module) for name, module in model.named_modules()
             if isinstance(module, torch.nn.ModuleList) and len(module) and name.rsplit(".", 1)[-1] in _STACK_NAMES]
    return [(name, module) for name, module in found
            if not any(name.startswith(other + ".") for other, _ in found if other != name)]


def selected_layers(model, freeze_layers: int | None, train_layers: str | None) -> list[int] | None:
    """Indices of the blocks to train (None: all). Checked against the model's depth."""
    if freeze_layers is None and train_layers is None:
        return None
    if freeze_layers is not None and train_layers is not None:
        raise ConfigError("give --freeze-layers or --train-layers, not both")
    stacks = layer_stacks(model)
    if not stacks:
        raise ConfigError("cannot find this model's transformer layers: drop --freeze-layers / --train-layers")
    depth = min(len(module) for _, module in stacks)
    chosen = list(range(freeze_layers, depth)) if freeze_layers is not None else parse_layers(train_layers)
    if not chosen or chosen[-1] >= depth:
        flag = f"--freeze-layers {freeze_layers}" if freeze_layers is not None else f"--train-layers {train_layers}"
        raise ConfigError(f"{flag}: the model has {depth} layers (0-{depth - 1}); at least one must be trained")
    return chosen


def _freeze_for_full(model, layers: list[int], freeze_layers: int | None) -> None:
    """Full mode, partial: train only `layers` (with --freeze-layers also the parts above the
    blocks: final norm and an untied output head; the embeddings stay frozen)."""
    stacks = layer_stacks(model)
    block_params = {id(p): (name, index) for name, stack in stacks for index, block in enumerate(stack)
                    for p in block.parameters()}
    embeddings = {id(p) for p in model.get_input_embeddings().parameters()}
    for parameter in model.parameters():
        where = block_params.get(id(parameter))
        if where is not None:
            parameter.requires_grad = where[1] in layers
        else:
            parameter.requires_grad = freeze_layers is not None and id(parameter) not in embeddings


# ---------------------------------------------------------------- model


def _check_qlora() -> None:
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--mode qlora quantizes the base model to 4 bits with bitsandbytes, which needs an NVIDIA "
                          "GPU with CUDA; this machine has none. Use --mode lora (same adapter, full-precision base)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("--mode qlora needs bitsandbytes: pip install bitsandbytes (or use --mode lora)")


def _load_model(model_path: Path, seq2seq: bool, mode: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from ragtune.train.common import quiet_transformers

    loader = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    kwargs: dict[str, Any] = {}
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    if mode == "qlora":
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if bf16 else torch.float16
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=compute)
        kwargs.update(quantization_config=quantization, dtype=compute,
                      device_map={"": int(os.environ.get("LOCAL_RANK", "0"))})
    elif mode == "lora" and bf16:  # the frozen base in bf16; the adapter weights stay float32
        kwargs["dtype"] = torch.bfloat16
    else:
        kwargs["dtype"] = torch.float32
    try:
        with quiet_transformers():
            network = loader.from_pretrained(str(model_path), **kwargs)
    except (OSError, ValueError) as exc:
        kind = "seq2seq" if seq2seq else "causal"
        raise InputError(f"--model {model_path}: cannot load it as a {kind} language model "
                         f"({str(exc).splitlines()[0][:200]})") from None
    if mode == "qlora":
        peft = require("peft", "QLoRA fine-tuning", "train")
        network = peft.prepare_model_for_kbit_training(network, use_gradient_checkpointing=False)
    return network


def _lora_model(network, lora: LoraOptions, seq2seq: bool, layers: list[int] | None):
    import warnings

    peft = require("peft", "LoRA fine-tuning", "train")
    targets = lora.target_modules or lora_target_modules(network)
    if targets in (["all-linear"], ["all_linear"]):
        targets = "all-linear"
    extra: dict[str, Any] = {}
    if layers is not None:
        extra = {"layers_to_transform": layers,
                 "layers_pattern": sorted({name.rsplit(".", 1)[-1] for name, _ in layer_stacks(network)})}
    config = peft.LoraConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM if seq2seq else peft.TaskType.CAUSAL_LM,
                             r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, **extra)
    try:
        with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5
            warnings.simplefilter("ignore", FutureWarning)
            return peft.get_peft_model(network, config)
    except ValueError as exc:
        raise ConfigError(f"--lora-target {','.join(targets) if isinstance(targets, list) else targets}: "
                          f"{str(exc).splitlines()[0][:300]}") from None


def _token_speed(trainer, output) -> dict:
    """Non-padding input tokens this run trained on, and per second of training."""
    tokens = trainer.state.num_input_tokens_seen - getattr(trainer, "_initial_num_input_tokens_seen", 0)
    runtime = output.metrics.get("train_runtime") or 0
    return {"train_tokens": tokens, "train_tokens_per_second": round(tokens / runtime, 3) if runtime else None}


def _trainable(network) -> dict:
    total = sum(p.numel() for p in network.parameters())
    trained = sum(p.numel() for p in network.parameters() if p.requires_grad)
    return {"trainable_parameters": trained, "total_parameters": total,
            "trainable_share": round(trained / total, 6) if total else 0.0}


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No `datasets` progress bars while trl prepares the (already tokenized) data."""
    from datasets.utils import logging as datasets_logging

    enabled = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            datasets_logging.enable_progress_bar()


def _sft_trainer_class():
    from transformers import Trainer
    from trl import SFTTrainer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.args.device.type == "cuda":
            return SFTTrainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
        # Off CUDA, trl's fused head scores every position in chunks and recomputes them in the
        # backward pass (its compact Triton path is CUDA-only): 25% slower per step than the
        # model's own loss on our CPU benchmark. The model's loss is the same mean over the
        # answer tokens. No cache: packed rows are told apart by position ids only without one.
        inputs["use_cache"] = False
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    # trl writes its own model card into the checkpoint folder at each save, and sends usage
    # telemetry unless HF_HUB_OFFLINE is set; ragtune writes its card once and sends nothing.
    return type("RagtuneSFTTrainer", (atomic_trainer(SFTTrainer),),
                {"compute_loss": compute_loss, "create_model_card": lambda self, *args, **kwargs: None,
                 "_send_telemetry": lambda self: None})


# ---------------------------------------------------------------- training


def train_sft(train: Any, validation: Any = None, *, model: str, mode: str = "lora",
              options: TrainOptions | None = None, lora: LoraOptions | None = None,
              columns: dict[str, str] | None = None, format: str | None = None, packing: bool = False,
              chat_template: bool = True, freeze_layers: int | None = None, train_layers: str | None = None,
              callbacks: list | None = None, progress: bool = True) -> SFTResult:
    """Fine-tune the causal or seq2seq LM `model` on `train` (a file, datasets.Dataset or list of
    dicts with `messages` or `prompt`/`completion`); validation loss picks the best step and drives
    early stopping. The output folder holds the adapter (lora, qlora) or the model (full)."""
    options = options or TrainOptions(learning_rate=DEFAULT_LEARNING_RATE.get(mode, 2e-4), max_length=512)
    lora = lora or LoraOptions()
    if mode not in MODES:
        raise InputError(f"unknown mode '{mode}': use one of {', '.join(MODES)}")
    if freeze_layers is not None and freeze_layers < 0:
        raise ConfigError("--freeze-layers must be 0 or more")
    if mode == "qlora":
        _check_qlora()
    # Everything a user can get wrong is checked before the output folder is touched.
    splits = {"train": _load_split(train, format, columns), "validation": _load_split(validation, format, columns)}
    splits = {name: examples for name, examples in splits.items() if examples is not None}
    from ragtune.knowledge.embedders import resolve_model_path

    model_path = resolve_model_path(model, setting="--model")
    out = Path(options.output_dir)
    settings = {"packing": packing, "chat_template": chat_template, "freeze_layers": freeze_layers,
                "train_layers": train_layers}
    record = {"task": "sft", "base_model": model, "mode": mode, "options": options.model_dump(), **settings,
              "lora": lora.model_dump() if mode != "full" else None,
              "data": {name: data_fingerprint(examples) for name, examples in splits.items()}}
    check_resumable(out / RUN_FILE, record, options)

    import torch
    from transformers import AutoConfig, AutoTokenizer, set_seed

    from ragtune.train.common import quiet_transformers, training_arguments

    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(str(model_path))
            tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    except (OSError, ValueError) as exc:
        raise InputError(f"--model {model}: not a transformers model folder with a tokenizer "
                         f"({str(exc).splitlines()[0][:200]})") from None
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    if packing and seq2seq:
        raise ConfigError("--packing is for causal LMs; a seq2seq model reads each example on its own: drop --packing")
    if not seq2seq and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # trl does the same; set here for the saved tokenizer
    encoded = {name: encode_examples(examples, tokenizer, seq2seq=seq2seq, max_length=options.max_length,
                                     chat_template=chat_template) for name, examples in splits.items()}
    set_seed(options.seed)  # the adapter's initial weights
    network = _load_model(model_path, seq2seq, mode)
    layers = selected_layers(network, freeze_layers, train_layers)
    if mode == "full":
        if layers is not None:
            _freeze_for_full(network, layers, freeze_layers)
    else:
        network = _lora_model(network, lora, seq2seq, layers)
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    args = training_arguments(options, output_dir=out / CHECKPOINTS, has_validation="validation" in encoded,
                              primary_metric="loss", progress=progress, bf16=bf16,
                              include_num_input_tokens_seen="non_padding")
    from datasets import Dataset

    datasets = {name: Dataset.from_list(rows) for name, rows in encoded.items()}
    if seq2seq:
        from transformers import DataCollatorForSeq2Seq, Trainer

        trainer = atomic_trainer(Trainer)(
            model=network, args=args, train_dataset=datasets["train"], eval_dataset=datasets.get("validation"),
            processing_class=tokenizer, data_collator=DataCollatorForSeq2Seq(tokenizer, model=network),
            callbacks=callbacks)
    else:
        from trl import SFTConfig

        from ragtune.train.common import arguments_as

        args = arguments_as(SFTConfig, args, max_length=options.max_length, packing=packing, eval_packing=False,
                            dataset_num_proc=None)
        with quiet_transformers(), _quiet_datasets():
            trainer = _sft_trainer_class()(model=network, args=args, train_dataset=datasets["train"],
                                           eval_dataset=datasets.get("validation"), processing_class=tokenizer,
                                           callbacks=callbacks)
    open_run_folder(out, record)
    hints = ["--mode lora (adapters: far less optimizer memory)"] if mode == "full" else []
    if mode == "lora" and torch.cuda.is_available():
        hints.append("--mode qlora (4-bit base model)")
    output = run_training(trainer, options, out, oom_hints=hints, title=f"SFT ({mode}) loss")

    metrics: dict = {"mode": mode, "seq2seq": seq2seq, "world_size": trainer.args.world_size, **_trainable(trainer.model),
                     "data": {name: len(rows) for name, rows in encoded.items()},
                     "train": train_summary(trainer, output, **_token_speed(trainer, output))}
    if "validation" in datasets:
        figures = trainer.evaluate()
        loss = figures.get("eval_loss")
        metrics["validation"] = {"n": len(encoded["validation"]), "loss": loss,
                                 "perplexity": math.exp(min(loss, 50)) if loss is not None else None}
    if trainer.is_world_process_zero():
        with quiet_transformers():
            tokenizer.save_pretrained(str(out))
            trainer.model.save_pretrained(str(out))
        write_json_atomic(out / "metrics.json", metrics)
        card = {"train_loss": metrics["train"].get("train_loss"), **({"validation": metrics["validation"]}
                                                                      if "validation" in metrics else {})}
        what = "LoRA adapter" if mode != "full" else "model"
        details = {"Mode": mode, "Architecture": "seq2seq" if seq2seq else "causal", "Steps": output.global_step,
                   "Processes": trainer.args.world_size, "Packing": packing,
                   "Trainable parameters": f"{metrics['trainable_parameters']:,} of {metrics['total_parameters']:,}"}
        if layers is not None:
            details["Trained layers"] = ", ".join(map(str, layers))
        if mode != "full":
            details["Use"] = f"`generator: {{backend: hf, model: {model}, adapter: {out}}}`, or `ragtune train merge`"
        write_model_card(out, title=f"SFT {what} ({mode}) on {model}", base_model=model, task="supervised fine-tuning",
                         data=record["data"], options=options, metrics=card, details=details,
                         pipeline_tag="text2text-generation" if seq2seq else "text-generation")
    return SFTResult(out, mode, metrics, trainer.args.world_size)


# ---------------------------------------------------------------- merge


def merge_adapter(adapter: str | os.PathLike, output_dir: str | os.PathLike, *, model: str | None = None,
                  dtype: str = "auto") -> Path:
    """Fold the LoRA `adapter` into its base model (`model`, default the base named in the
    adapter's config) and save a plain transformers folder (weights, config, generation config,
    tokenizer) that transformers and vLLM load without peft. Written to a staging folder and
    renamed into place, so `output_dir` is complete or absent."""
    import json
    import warnings

    adapter, out = Path(adapter), Path(output_dir)
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        raise InputError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json); give the --out folder of "
                         f"`ragtune train sft --mode lora`")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty: choose another --out")
    adapter_config = json.loads(config_file.read_text(encoding="utf-8"))
    base = model or adapter_config.get("base_model_name_or_path")
    if not base:
        raise InputError(f"{config_file}: names no base model; give it with --model")
    if dtype not in ("auto", "float32", "float16", "bfloat16"):
        raise ConfigError(f"--dtype '{dtype}': use auto, float32, float16 or bfloat16")
    from ragtune.knowledge.embedders import resolve_model_path

    base_path = resolve_model_path(base, setting="--model")
    peft = require("peft", "merging a LoRA adapter", "train")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from ragtune.train.common import quiet_transformers

    with quiet_transformers():
        config = AutoConfig.from_pretrained(str(base_path))
        loader = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        if dtype == "auto":  # the base model's own dtype
            saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
            dtype = str(saved).removeprefix("torch.") if str(saved).endswith(("float16", "bfloat16")) else "float32"
        network = loader.from_pretrained(str(base_path), dtype=torch.float32)  # merge at full precision
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                merged = peft.PeftModel.from_pretrained(network, str(adapter)).merge_and_unload()
        except (ValueError, RuntimeError, KeyError) as exc:
            raise InputError(f"{adapter}: cannot be applied to base model {base} "
                             f"({str(exc).splitlines()[0][:200]}); give the right base with --model") from None
        merged = merged.to(getattr(torch, dtype))
        has_tokenizer = any((adapter / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
        tokenizer = AutoTokenizer.from_pretrained(str(adapter if has_tokenizer else base_path))
    staging = out.parent / f".{out.name}.merging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with quiet_transformers():
            merged.save_pretrained(str(staging))
            tokenizer.save_pretrained(str(staging))
        card = adapter / "README.md"
        if card.is_file():
            text = card.read_text(encoding="utf-8")
            note = (f"\n## Merged\n\nThe LoRA adapter `{adapter}` merged into `{base}` ({dtype}) by `ragtune train "
                    f"merge`: a plain transformers model, no peft needed.\n")
            (staging / "README.md").write_text(text + note, encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("merged %s into %s: %s", adapter, base, out)
    return out
