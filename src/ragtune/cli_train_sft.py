"""`ragtune train sft` and `ragtune train merge`: thin commands over ragtune.train.sft.

`add_commands(train_app)` registers them on the `ragtune train` group. `sft` gets every TrainOptions
and LoraOptions field as a flag, like the other training commands, with two SFT defaults: the
learning rate follows the mode (2e-4 for LoRA/QLoRA, 2e-5 for full) and --max-length is 512.
torch, transformers, peft and trl load inside the commands.
"""
from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Callable, List, Optional

import typer

from ragtune.cli_train import _columns, _flag_parameters
from ragtune.train.common import LoraOptions, TrainOptions, is_main_process

MAX_LENGTH = 512


def _with_sft_flags(command: Callable) -> Callable:
    """The TrainOptions and --lora-* flags, with the SFT defaults; the command receives `options` and `lora`."""
    signature = inspect.signature(command)
    own = [p for name, p in signature.parameters.items() if name not in ("options", "lora")]
    flags = []
    for param in _flag_parameters(TrainOptions) + _flag_parameters(LoraOptions, "lora_"):
        if param.name == "learning_rate":
            param = param.replace(annotation=Optional[float], default=typer.Option(
                None, "--learning-rate", "--lr", help="Peak learning rate (AdamW). Default: 2e-4 with --mode lora or "
                                                      "qlora, 2e-5 with --mode full.", show_default=False))
        elif param.name == "max_length":
            param = param.replace(default=typer.Option(
                MAX_LENGTH, "--max-length", help="Longest example in tokens (prompt and answer); longer ones are cut "
                                                 "at the end, and a row whose answer is cut away entirely is dropped."))
        flags.append(param)

    @functools.wraps(command)
    def wrapper(**values):
        from ragtune.train.sft import DEFAULT_LEARNING_RATE

        if values.get("learning_rate") is None:
            values["learning_rate"] = DEFAULT_LEARNING_RATE.get(values.get("mode", "lora"), 2e-4)
        options = TrainOptions(**{name: values.pop(name) for name in TrainOptions.model_fields})
        lora = LoraOptions(**{name: values.pop("lora_" + name) for name in LoraOptions.model_fields})
        return command(options=options, lora=lora, **values)

    wrapper.__signature__ = signature.replace(parameters=own + flags)
    return wrapper


def sft_command(
    train: Path = typer.Option(..., "--train", help="Training data: .jsonl, .json, .csv or .tsv with chat `messages` or `prompt` and `completion`."),
    model: str = typer.Option(..., "--model", help="Causal or seq2seq LM to start from: local folder or HF id."),
    validation: Optional[Path] = typer.Option(None, "--validation", help="Validation data: its loss picks the best step and drives early stopping."),
    column: Optional[List[str]] = typer.Option(None, "--column", help="Map a field to a file column, e.g. prompt=instruction (repeatable)."),
    data_format: Optional[str] = typer.Option(None, "--format", help="messages | prompt_completion (default: detected from the columns)."),
    mode: str = typer.Option("lora", "--mode", help="lora (adapters) | qlora (adapters on a 4-bit base; CUDA + bitsandbytes) | full (all weights)."),
    packing: bool = typer.Option(False, "--packing/--no-packing", help="Pack several examples into each --max-length sequence (causal LMs; each still attends only to itself)."),
    chat_template: bool = typer.Option(True, "--chat-template/--no-chat-template", help="Render rows with the tokenizer's chat template (else `Role: text` lines, as the hf generator does). --no-chat-template trains prompt/completion rows as plain text: prompt, then completion."),
    freeze_layers: Optional[int] = typer.Option(None, "--freeze-layers", min=0, help="Partial fine-tuning: keep the embeddings and the first N transformer layers frozen (LoRA: no adapters there)."),
    train_layers: Optional[str] = typer.Option(None, "--train-layers", help="Partial fine-tuning: train only these layers, e.g. 10-11 or 0,5 (LoRA: adapters only there)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    options: TrainOptions = None,
    lora: LoraOptions = None,
):
    """Supervised fine-tuning of a causal or seq2seq LM (LoRA, QLoRA or full); loss on the answers only."""
    from ragtune.cli_train_encoders import _run
    from ragtune.train.sft import train_sft

    result = _run(lambda: train_sft(train, validation, model=model, mode=mode, options=options, lora=lora,
                                    columns=_columns(column), format=data_format, packing=packing,
                                    chat_template=chat_template, freeze_layers=freeze_layers,
                                    train_layers=train_layers, progress=not quiet))
    if not is_main_process():
        return
    figures = result.metrics["train"]
    tokens = figures.get("train_tokens_per_second")
    typer.echo(f"saved {'LoRA adapter' if mode != 'full' else 'model'} to {result.output_dir}: "
               f"{figures['global_step']} steps, {figures.get('train_runtime', 0):.1f} s"
               + (f", {tokens:.0f} tokens/s" if tokens else "") + f", {result.world_size} process(es)")
    if "validation" in result.metrics:
        shown = result.metrics["validation"]
        typer.echo(f"validation: loss {shown['loss']:.4f}, perplexity {shown['perplexity']:.2f} (n={shown['n']})")
    if mode == "full":
        typer.echo(f"next: set `generator: {{backend: hf, model: {result.output_dir}}}` in ragtune.yaml")
    else:
        typer.echo(f"next: set `generator: {{backend: hf, model: {model}, adapter: {result.output_dir}}}` in "
                   f"ragtune.yaml, or `ragtune train merge --adapter {result.output_dir} --out MERGED`")


def merge_command(
    adapter: Path = typer.Option(..., "--adapter", help="Folder of a LoRA adapter (the --out of `ragtune train sft`)."),
    out: Path = typer.Option(..., "--out", "--output-dir", help="New folder for the merged model (must not exist or be empty)."),
    model: Optional[str] = typer.Option(None, "--model", help="Base model (default: the one named in the adapter's adapter_config.json)."),
    dtype: str = typer.Option("auto", "--dtype", help="Weights of the merged model: auto (the base model's dtype) | float32 | float16 | bfloat16 (merged in float32 first)."),
):
    """Merge a LoRA adapter into its base model: a plain transformers folder (loads without peft, e.g. in vLLM)."""
    from ragtune.train.sft import merge_adapter

    folder = merge_adapter(adapter, out, model=model, dtype=dtype)
    typer.echo(f"saved merged model to {folder}")
    typer.echo(f"next: set `generator: {{backend: hf, model: {folder}}}` in ragtune.yaml (or serve it with vLLM)")


def add_commands(train_app: typer.Typer) -> None:
    """Register `sft` and `merge` on the `ragtune train` group."""
    train_app.command("sft")(_with_sft_flags(sft_command))
    train_app.command("merge")(merge_command)
