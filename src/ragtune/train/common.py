"""What every training command shares: options, crash-safe checkpoints, logs, loss curve, model card.

A command builds a `transformers` trainer with `training_arguments(options, ...)` and a class from
`atomic_trainer(Trainer)`, then calls `run_training(trainer, options, run_dir)`:

    run_dir/
      checkpoints/checkpoint-N/   written atomically, `checkpoint_complete.json` marks a finished one
      train_log.jsonl             every log event (train loss, eval metrics, final figures), one per line
      loss_curve.png              train and validation loss against the optimizer step
      README.md                   model card: base model, data sha256, options, metrics (write_model_card)

>>> TrainOptions(batch_size=8).gradient_accumulation
1

This module imports only pydantic and the standard library at load time (the CLI reads
`TrainOptions` from it); transformers, torch and matplotlib load inside the functions that use them.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field

from ragtune.errors import ConfigError, RagtuneError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
RUN_FILE = "ragtune_run.json"  # what a run was started with: resume checks it
LOG_NAME = "train_log.jsonl"
CURVE_NAME = "loss_curve.png"
MARKER = "checkpoint_complete.json"
STAGING_PREFIX = ".staging-"
# Test hook: "STEP:SECONDS" sleeps after checkpoint-STEP is renamed into place and before its
# completion marker is written, so tests/test_train_resume.py can SIGKILL inside a save.
PAUSE_ENV = "RAGTUNE_CHECKPOINT_PAUSE"


class TrainingError(RagtuneError):
    """Training could not run as asked (out of memory, a checkpoint that does not fit the data)."""


class TrainingInterrupted(TrainingError):
    """Ctrl-C stopped training after a complete checkpoint was written."""

    exit_code = 130


class TrainOptions(BaseModel):
    """Options shared by every `ragtune train` command; each one is also a CLI flag."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seed: int = Field(42, description="Random seed: new layers' initial weights, data order, dropout.")
    learning_rate: float = Field(5e-5, gt=0, description="Peak learning rate (AdamW), reached after warmup, then linear decay.")
    batch_size: int = Field(16, ge=1, description="Examples per process per forward pass.")
    gradient_accumulation: int = Field(1, ge=1, description="Forward passes summed per optimizer step (effective batch = batch size x this x processes).")
    epochs: float = Field(3.0, gt=0, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of the steps over which the learning rate ramps up from 0.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate on the validation data every N steps (default: at the end of each epoch).")
    patience: int | None = Field(None, ge=1, description="Early stopping: stop after N evaluations without improvement of metric_for_best (needs validation data; default: off).")
    metric_for_best: str | None = Field(None, description="Validation metric that picks the best checkpoint and drives early stopping (default: the command's own, e.g. macro_f1).")
    greater_is_better: bool | None = Field(None, description="Whether a larger metric_for_best is better (default: false for losses, true otherwise).")
    keep_best: bool = Field(True, description="At the end, keep the weights of the best validation evaluation rather than the last step.")
    max_length: int = Field(128, ge=8, description="Longest input in tokens; longer inputs are truncated.")
    save_steps: int | None = Field(None, ge=1, description="Write a checkpoint every N steps (default: at each evaluation, else once per epoch); must be a multiple of eval_steps with keep_best.")
    save_total_limit: int | None = Field(2, ge=1, description="Checkpoints kept on disk (the best one is always kept).")
    logging_steps: int = Field(10, ge=1, description="Log the training loss every N steps.")
    output_dir: str = Field("model", description="Folder of the trained model, its logs and checkpoints.")
    resume: bool = Field(False, description="Continue from the newest complete checkpoint in output_dir, with the same data order.")


class LoraOptions(BaseModel):
    """LoRA adapter settings (used by commands run with --mode lora)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    r: int = Field(8, ge=1, description="LoRA rank: size of the low-rank update matrices.")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (the update is scaled by alpha / r).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: list[str] | None = Field(None, description="Linear layers that get adapters (default: the attention query/value projections, detected per architecture).")


# Attention projections by module name, for architectures peft's own table does not list.
_ATTENTION_PAIRS = (("query", "value"), ("q_proj", "v_proj"), ("q_lin", "v_lin"), ("q", "v"), ("query_key_value",), ("c_attn",))


def lora_target_modules(model) -> list[str]:
    """Names of the attention projections to adapt in `model` (BERT-like: query/value)."""
    import torch

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as known
    except ImportError:  # pragma: no cover - older peft
        known = {}
    if isinstance(known.get(model_type), list):
        return list(known[model_type])
    linear = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    for names in _ATTENTION_PAIRS:
        if set(names) <= linear:
            return list(names)
    raise ConfigError(f"cannot tell which layers of a '{model_type}' model are its attention projections; "
                      f"name them with --lora-target (linear layers: {', '.join(sorted(linear))})")


# ---------------------------------------------------------------- processes


def world_size() -> int:
    """Processes in this training run (torchrun / accelerate set WORLD_SIZE; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on the process that writes logs, cards and messages (global rank 0)."""
    return int(os.environ.get("RANK", "0")) == 0


# ---------------------------------------------------------------- TrainingArguments


def _greater_is_better(options: TrainOptions, metric: str) -> bool:
    return options.greater_is_better if options.greater_is_better is not None else "loss" not in metric


def training_arguments(options: TrainOptions, *, output_dir: str | os.PathLike, has_validation: bool,
                       primary_metric: str = "loss", progress: bool = True, **overrides: Any):
    """`transformers.TrainingArguments` for `options`; checkpoints go to `output_dir`.

    Evaluation, saving and best-model selection are made consistent here (Trainer requires the
    save and evaluation schedules to match when it keeps the best checkpoint); a combination that
    cannot work raises ConfigError naming the flags.
    """
    import dataclasses

    from transformers import TrainingArguments

    if options.patience and not has_validation:
        raise ConfigError("--patience needs validation data: add --validation FILE (or drop --patience)")
    if options.eval_steps and not has_validation:
        log.warning("--eval-steps is ignored: there is no validation data")
    metric = options.metric_for_best or primary_metric
    select_best = has_validation and (options.keep_best or options.patience is not None)
    eval_strategy = ("steps" if options.eval_steps else "epoch") if has_validation else "no"
    if select_best:  # checkpoints must be written exactly at (a subset of) the evaluations
        if options.save_steps and not options.eval_steps:
            raise ConfigError("--save-steps with keep-best needs --eval-steps too (checkpoints are chosen at evaluations)")
        if options.save_steps and options.save_steps % options.eval_steps:
            raise ConfigError(f"--save-steps {options.save_steps} must be a multiple of --eval-steps {options.eval_steps} "
                              "so each checkpoint has a validation score (or pass --no-keep-best)")
        save_strategy, save_steps = eval_strategy, options.save_steps or options.eval_steps
    else:
        save_strategy, save_steps = ("steps", options.save_steps) if options.save_steps else ("epoch", None)
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    warmup = ({"warmup_ratio": options.warmup_ratio} if "warmup_ratio" in fields  # transformers < 5
              else {"warmup_steps": options.warmup_ratio})                        # 5.x: a float < 1 is a ratio
    kwargs = dict(
        output_dir=str(Path(output_dir).resolve()), seed=options.seed, learning_rate=options.learning_rate,
        per_device_train_batch_size=options.batch_size, per_device_eval_batch_size=options.batch_size,
        gradient_accumulation_steps=options.gradient_accumulation, num_train_epochs=options.epochs,
        max_steps=options.max_steps or -1, weight_decay=options.weight_decay, **warmup,
        eval_strategy=eval_strategy, eval_steps=options.eval_steps if eval_strategy == "steps" else None,
        save_strategy=save_strategy, save_steps=save_steps or 500, save_total_limit=options.save_total_limit,
        logging_strategy="steps", logging_steps=options.logging_steps, logging_first_step=True,
        load_best_model_at_end=bool(select_best and options.keep_best),
        metric_for_best_model=metric if select_best else None,
        greater_is_better=_greater_is_better(options, metric) if select_best else None,
        report_to="none", disable_tqdm=not (progress and is_main_process()), dataloader_pin_memory=False,
    )
    if world_size() > 1 and not _has_cuda():
        # Under torchrun on a CPU-only machine, accelerate sets up gloo data parallelism only when asked
        # for the CPU explicitly; otherwise every process silently trains alone (world size 1 each).
        kwargs["use_cpu"] = True
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ---------------------------------------------------------------- atomic checkpoints


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file, then every folder bottom-up, so a rename after this publishes durable data."""
    paths = sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True)
    for path in paths:
        if path.is_file():
            _fsync_path(path)
    for path in paths + [folder]:
        if path.is_dir():
            _fsync_path(path)


def _test_pause(step: int) -> None:
    spec = os.environ.get(PAUSE_ENV, "")
    at, _, seconds = spec.partition(":")
    if at.strip().isdigit() and int(at) == step:
        print(f"[{PAUSE_ENV}] pausing {seconds}s inside the save of checkpoint-{step}", flush=True)
        time.sleep(float(seconds or 60))


def _step_of(path: Path) -> int:
    tail = path.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def complete_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Checkpoints in `folder` that carry the completion marker, oldest step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and _step_of(p) >= 0 and (p / MARKER).is_file()]
    return sorted(found, key=_step_of)


def latest_checkpoint(folder: str | os.PathLike, *, clean: bool = True) -> Path | None:
    """The newest complete checkpoint in `folder`, or None. With `clean`, first deletes what a
    crash left behind: staging folders and checkpoints without the completion marker."""
    folder = Path(folder)
    if clean and folder.is_dir():
        for path in list(folder.glob(f"{STAGING_PREFIX}*")) + list(folder.glob("checkpoint-*")):
            if path.is_dir() and (path.name.startswith(STAGING_PREFIX) or not (path / MARKER).is_file()):
                log.warning("removing incomplete checkpoint %s (a save was interrupted)", path)
                shutil.rmtree(path, ignore_errors=True)
    complete = complete_checkpoints(folder)
    return complete[-1] if complete else None


class AtomicCheckpoints:
    """Mixin for a `transformers.Trainer` (or a subclass such as sentence-transformers' trainers):
    each checkpoint is written into a staging folder, fsynced, renamed to `checkpoint-N` and then
    marked complete, so a crash at any moment leaves either a complete checkpoint or one that
    `latest_checkpoint` ignores and deletes. Use `atomic_trainer(Trainer)` to get the class."""

    _staging_dir: str | None = None

    def _get_output_dir(self, trial):
        # While a checkpoint is being written, the trainer's own save code sees the staging folder.
        return self._staging_dir or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        run_dir = Path(super()._get_output_dir(trial))
        step = self.state.global_step
        name = f"{PREFIX_CHECKPOINT_DIR}-{step}"
        staging, final = run_dir / f"{STAGING_PREFIX}{step}", run_dir / name
        main = self.args.should_save
        if main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self._staging_dir = str(staging)
        try:
            super()._save_checkpoint(model, trial)  # every rank writes its RNG state into staging
        finally:
            self._staging_dir = None
        self.accelerator.wait_for_everyone()
        best_step = getattr(self.state, "best_global_step", None)
        if best_step:  # the trainer recorded paths inside staging: point them at run_dir
            best = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{best_step}"
            if best_step == step or best.is_dir():
                self.state.best_model_checkpoint = str(best)
        if main:
            from transformers.trainer import TRAINER_STATE_NAME
            from transformers.trainer_utils import rotate_checkpoints

            self.state.save_to_json(str(staging / name / TRAINER_STATE_NAME))
            _fsync_tree(staging)
            if final.exists():  # left by a crash before its marker: replace it
                shutil.rmtree(final)
            os.rename(staging / name, final)
            _fsync_path(run_dir)
            staging.rmdir()
            _test_pause(step)
            marker = final / MARKER
            files = sorted(p.relative_to(final).as_posix() for p in final.rglob("*") if p.is_file())
            with open(marker, "w", encoding="utf-8") as fh:
                json.dump({"step": step, "files": files, "time": _now()}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            _fsync_path(final)
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        self.accelerator.wait_for_everyone()


def atomic_trainer(base: type) -> type:
    """`base` (transformers.Trainer or a subclass) with atomic checkpoints."""
    return type(f"Atomic{base.__name__}", (AtomicCheckpoints, base), {})


# ---------------------------------------------------------------- logs, Ctrl-C, loss curve


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class _RunMonitorHooks:
    """Trainer callback (combined with TrainerCallback in `_monitor`): appends every log event to
    train_log.jsonl on the main process, and turns a Ctrl-C request into save + stop at step end."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.stop_requested = False
        self.stopped_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.log_path.exists():
            # A fresh start forgets older events; a resumed run drops those past its checkpoint,
            # which are about to be logged again.
            kept = [line for line in self.log_path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and state.global_step > 0 and json.loads(line).get("step", 0) <= state.global_step]
            self.log_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            record = {"step": state.global_step, "epoch": state.epoch, "time": _now(), **logs}
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, default=str) + "\n")

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop_requested and self.stopped_at is None:
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control


def _monitor(log_path: Path):
    from transformers import TrainerCallback

    return type("RunMonitor", (_RunMonitorHooks, TrainerCallback), {})(log_path)


@contextmanager
def _stop_on_sigint(monitor: _RunMonitorHooks) -> Iterator[None]:
    """First Ctrl-C asks for a checkpoint and a clean stop; a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def request_stop(signum, frame):
        monitor.stop_requested = True
        signal.signal(signal.SIGINT, previous)
        if is_main_process():
            print("\nCtrl-C: saving a checkpoint after this step, then stopping (Ctrl-C again to quit now)", flush=True)

    signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def read_log(path: str | os.PathLike) -> list[dict]:
    """The events of a train_log.jsonl (empty when there is none)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss_curve(log_path: str | os.PathLike, png_path: str | os.PathLike, title: str = "loss") -> Path | None:
    """Train and validation loss against the step, as a PNG; None (with a warning) without matplotlib."""
    try:  # a bare Figure renders with Agg and leaves the process's pyplot backend alone
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("loss curve skipped: matplotlib is missing (pip install 'ragtune[train]')")
        return None
    events = read_log(log_path)
    train = [(e["step"], e["loss"]) for e in events if "loss" in e]
    evals = [(e["step"], e["eval_loss"]) for e in events if "eval_loss" in e]
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    for points, label, style in ((train, "train", "-"), (evals, "validation", "o-")):
        if points:
            ax.plot(*zip(*points), style, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend()
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, png_path)
    return png_path


# ---------------------------------------------------------------- running


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-save and per-load progress bars and load reports (the training
    progress bar stays), e.g. around a `from_pretrained` that adds a new head on purpose."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)) if t)
    if isinstance(exc, (MemoryError, *oom_types)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "failed to allocate" in text)


def out_of_memory_advice(options: TrainOptions, hints: Iterable[str] = (), batch: int | None = None,
                         note: str = "") -> str:
    """What to change when a step does not fit in memory: `batch` (default half the batch size)
    with the accumulation that keeps the effective batch, the command's `hints`, a shorter length."""
    batch = batch or max(1, options.batch_size // 2)
    effective = options.batch_size * options.gradient_accumulation
    accumulate = -(-effective // batch)
    smaller = [f"--batch-size {batch} --gradient-accumulation {accumulate} (effective batch {batch * accumulate}"
               f"{note})"] if batch < options.batch_size else []
    return "; or ".join([*smaller, *hints, f"a shorter --max-length (now {options.max_length})"])


# Peak memory of one CPU training step (fp32 weights, AdamW, SDPA attention), fitted on
# all-MiniLM-L6-v2 with torch 2.13: per sequence of L tokens and per transformer layer, about
# 10.4 bytes per attention head x L^2 (scores, probabilities, dropout) and 145 bytes per hidden
# unit x L; plus 12 bytes per trainable weight (gradient and two AdamW moments). Measured against
# real steps by benchmarks/train_memory.py (results/train-memory.json).
ATTENTION_BYTES, HIDDEN_BYTES, OPTIMIZER_BYTES = 10.4, 145.0, 12.0
MEMORY_HEADROOM = 0.8  # warn when a step may need more than this share of the free memory


def _transformer(model):
    """The `transformers` model inside `model` (a sentence-transformers or peft wrapper, or itself)."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if getattr(config, "num_hidden_layers", None) and getattr(config, "hidden_size", None):
            return module
    return None


def step_memory_bytes(model, sequences: int, max_length: int) -> int | None:
    """Bytes one training step of `sequences` texts of up to `max_length` tokens may add on CPU
    (an upper bound: dynamic padding makes most batches shorter); None when the model is not a
    transformer this estimate knows, or its layers are frozen (a linear probe keeps no activations)."""
    import torch

    hf = _transformer(model)
    if hf is None:
        return None
    layers = next((m for m in hf.modules() if isinstance(m, torch.nn.ModuleList)), None)
    if layers is None or not any(p.requires_grad for p in layers.parameters()):
        return None
    config = hf.config
    heads = getattr(config, "num_attention_heads", None) or 1
    per_sequence = config.num_hidden_layers * (heads * max_length ** 2 * ATTENTION_BYTES
                                               + config.hidden_size * max_length * HIDDEN_BYTES)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return int(sequences * per_sequence + trainable * OPTIMIZER_BYTES)


def available_memory_bytes() -> int | None:
    """Memory this process can still take: the system's available memory, or what is left under a
    cgroup (container) limit when that is less; None where neither can be read."""
    try:
        import psutil

        free = int(psutil.virtual_memory().available)
    except (ImportError, OSError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            free = min(free, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return free


def memory_warning(model, options: TrainOptions, texts_per_example: int, processes: int = 1,
                   free: int | None = None, hints: Iterable[str] = ()) -> str | None:
    """A warning when one CPU training step may not fit in the free memory (where Linux kills the
    process without an error), with a batch size that would fit; None when it fits or cannot be told."""
    need = step_memory_bytes(model, options.batch_size * texts_per_example, options.max_length)
    free = available_memory_bytes() if free is None else free
    if need is None or free is None or need * processes <= MEMORY_HEADROOM * free:
        return None
    gib = 2 ** 30
    fitting, batch, note = options.batch_size, options.batch_size, ""  # fitting: none found yet
    while batch > 1:
        batch //= 2
        fits = step_memory_bytes(model, batch * texts_per_example, options.max_length) * processes
        if fits <= MEMORY_HEADROOM * free:
            fitting, note = batch, f", about {fits / gib:.1f} GiB a step"
            break
    advice = out_of_memory_advice(options, hints, batch=fitting, note=note)
    texts = f" x {texts_per_example} texts" if texts_per_example > 1 else ""
    on = f" on each of {processes} processes" if processes > 1 else ""
    return (f"one training step may need about {need / gib:.1f} GiB{on} (batch {options.batch_size}{texts} of up to "
            f"{options.max_length} tokens) but about {free / gib:.1f} GiB is free; on CPU the system may kill the "
            f"run without an error message. Try {advice}")


def run_training(trainer, options: TrainOptions, run_dir: str | os.PathLike, *,
                 oom_hints: Iterable[str] = (), title: str = "loss",
                 texts_per_example: int = 1):
    """Train with `trainer` (built on `training_arguments`): resume, early stopping, JSONL log,
    Ctrl-C -> checkpoint, out of memory -> TrainingError with advice, loss curve; on CPU, a warning
    first when a step of `options.batch_size` examples of `texts_per_example` texts each may not
    fit in memory. Returns the trainer's TrainOutput."""
    from transformers import EarlyStoppingCallback, PrinterCallback

    run_dir = Path(run_dir)
    checkpoints = Path(trainer.args.output_dir)
    monitor = _monitor(run_dir / LOG_NAME)
    trainer.add_callback(monitor)
    if trainer.args.disable_tqdm:  # no progress bar: no log dicts on stdout either (they are in the JSONL)
        trainer.remove_callback(PrinterCallback)
    if options.patience is not None and trainer.args.eval_strategy != "no":
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=options.patience))
    if is_main_process() and trainer.args.device.type == "cpu":
        here = int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))  # processes sharing this machine's memory
        warning = memory_warning(trainer.model, options, texts_per_example, processes=here, hints=oom_hints)
        if warning:
            log.warning(warning)
    resume_from = None
    if options.resume:
        resume_from = latest_checkpoint(checkpoints, clean=is_main_process())
        if resume_from is None:
            log.warning("--resume: no complete checkpoint in %s; starting from the beginning", checkpoints)
        elif is_main_process():
            log.info("resuming from %s", resume_from)
    with _stop_on_sigint(monitor), quiet_transformers():
        try:
            output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            device = getattr(trainer.args, "device", "the device")
            raise TrainingError(f"out of memory while training on {device} (batch size {options.batch_size}, "
                                f"max length {options.max_length}). Try {out_of_memory_advice(options, oom_hints)}") from exc
    if trainer.is_world_process_zero():
        plot_loss_curve(run_dir / LOG_NAME, run_dir / CURVE_NAME, title=title)
    if monitor.stopped_at is not None:
        saved = checkpoints / f"checkpoint-{monitor.stopped_at}"
        raise TrainingInterrupted(f"training stopped by Ctrl-C at step {monitor.stopped_at}; the checkpoint is in "
                                  f"{saved}. Continue with the same command plus --resume")
    return output


# ---------------------------------------------------------------- data fingerprints and model card


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(examples) -> dict:
    """Where a data split came from: its source, row count, and sha256 of the file (when it is
    one) and of the canonical rows (which also covers column mapping and in-memory data)."""
    rows = hashlib.sha256(json.dumps(examples.rows, sort_keys=True, default=str).encode()).hexdigest()
    out = {"source": examples.source, "rows": len(examples), "rows_sha256": rows}
    if Path(examples.source).is_file():
        out["sha256"] = sha256_file(examples.source)
    return out


def check_resumable(run_file: Path, record: dict, options: TrainOptions) -> None:
    """Before writing anything: a fresh run must not reuse a folder with checkpoints, and a resumed
    run must see the data it was started on (else the data order, hence the result, would differ)."""
    checkpoints = run_file.parent / CHECKPOINTS
    has_checkpoints = checkpoints.is_dir() and any(checkpoints.glob("checkpoint-*"))
    if not options.resume:
        if has_checkpoints:
            raise TrainingError(f"{run_file.parent} holds checkpoints of an earlier run: add --resume to continue "
                                f"it, or choose another --out")
        return
    if not run_file.exists():
        return
    before = json.loads(run_file.read_text(encoding="utf-8"))
    if before.get("data") != record.get("data"):
        raise TrainingError(f"--resume: the data differs from the run in {run_file.parent} (compare its "
                            f"{run_file.name}); resuming would not reproduce the data order. Start a new --out")
    changed = {k for k, v in record.get("options", {}).items()
               if k not in ("resume", "output_dir") and before.get("options", {}).get(k) != v}
    if changed:
        log.warning("--resume with changed options: %s", ", ".join(sorted(changed)))


def write_json_atomic(path: Path, payload: Any, *, indent: int = 2, default=str) -> Path:
    """Write `payload` as JSON to `path` through a temporary file and a rename (never half a file);
    `default` converts what JSON cannot hold (str by default)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=indent, default=default) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _ragtune_version() -> str:
    from ragtune import __version__

    return __version__


def write_model_card(folder: str | os.PathLike, *, title: str, base_model: str, task: str, data: dict[str, dict],
                     options: TrainOptions, metrics: dict, details: dict | None = None,
                     pipeline_tag: str | None = None) -> Path:
    """README.md in `folder`: what was trained from what, how, and how well."""
    folder = Path(folder)
    front = ["---", "library_name: transformers", "tags: [ragtune]"]
    if pipeline_tag:
        front.append(f"pipeline_tag: {pipeline_tag}")
    if "/" in base_model and not Path(base_model).exists():
        front.append(f"base_model: {base_model}")
    lines = front + ["---", "", f"# {title}", "",
                     f"Trained with ragtune {_ragtune_version()} on {_now()} ({task}).", "",
                     f"- **Base model**: `{base_model}`"]
    for key, value in (details or {}).items():
        lines.append(f"- **{key}**: {value}")
    lines += ["", "## Data", "", "| split | source | rows | sha256 |", "|---|---|---|---|"]
    for split, info in data.items():
        lines.append(f"| {split} | `{info.get('source')}` | {info.get('rows')} | "
                     f"`{info.get('sha256') or info.get('rows_sha256')}` |")
    lines += ["", "## Options", "", "```json", json.dumps(options.model_dump(), indent=2), "```",
              "", "## Metrics", "", "```json", json.dumps(metrics, indent=2, default=str), "```", ""]
    path = folder / "README.md"
    tmp = folder / f".README.md.{os.getpid()}.tmp"
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    return path


def arguments_as(cls, args, **extra):
    """The settings of TrainingArguments `args` as a subclass `cls` (a sentence-transformers
    trainer's arguments), whose own extra fields keep their defaults unless given in `extra`."""
    import dataclasses

    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init}, **extra)


def open_run_folder(out: Path, record: dict) -> None:
    """Create the output folder and write its run record (main process only). Call it after every
    check a user's input can fail, so that a bad run leaves nothing behind."""
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / RUN_FILE, record)


def train_summary(trainer, output, **extra) -> dict:
    """The "train" part of a run's metrics: the trainer's figures, steps and the checkpoint kept."""
    return {**output.metrics, "global_step": output.global_step, **extra,
            "best_checkpoint": trainer.state.best_model_checkpoint}
