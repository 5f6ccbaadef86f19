"""SFT training speed: `ragtune train sft` (LoRA) against a plain `transformers.Trainer` + peft loop,
side by side on the same randomly initialised Llama and the same data; tokens/s, medians of
alternating runs, ratio ours / plain (target >= 0.95).

    python benchmarks/train_sft.py --data ../shared/data/squad-v1.1-dev

Model: a Llama config of 6 layers, 512 wide (8 heads, 2 key-value heads, MLP 1376; 20.7M weights with
the 8k vocabulary), random weights (seeded), saved once so both sides load the same folder. Its
tokenizer is a byte-level BPE trained here on the data, with a small chat template.

Data: SQuAD v1.1 dev questions as chat rows (system instruction; user: paragraph + question;
assistant: the first reference answer), paragraphs cut to `--context-chars`. Each run trains on
exactly batch x steps rows for one pass, so both sides see the same rows in the same order.

Both sides: LoRA r=16, alpha 32, dropout 0.05 on q_proj/v_proj; AdamW, same learning rate,
warmup, seed, batch size and --max-length; padding per batch; one checkpoint at the last step;
no evaluation; non-padding input tokens counted by the Trainer on both sides
(`include_num_input_tokens_seen="non_padding"`). tokens/s = those tokens / train_runtime.
Ours is `ragtune.train.sft.train_sft` (trl's SFTTrainer with ragtune's atomic checkpoints, logs
and answer-only labels); plain is what a transformers user writes: apply_chat_template, labels
-100 on the prompt, DataCollatorForSeq2Seq, get_peft_model, Trainer.train().

GPU: measured only where a CUDA device exists; the result file says when there was none.
Writes benchmarks/results/train-sft-speed.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fail, fingerprint, header, log, machine, median, write_result  # noqa: E402

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
SYSTEM = "Answer the question with a short span from the paragraph."
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
TARGET = 0.95


def squad_rows(path: Path, context_chars: int) -> list[dict]:
    """Chat rows, one per question, in file order."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    rows = []
    for article in data:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"][:context_chars]
            for qa in paragraph["qas"]:
                rows.append({"messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"Paragraph: {context}\n\nQuestion: {qa['question']}"},
                    {"role": "assistant", "content": qa["answers"][0]["text"]}]})
    return rows


def build_model(folder: Path, texts: list[str], vocab_size: int, seed: int) -> Path:
    """The random 6-layer, 512-wide Llama and its BPE tokenizer, saved in `folder`."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL, show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=trainer._tokenizer, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>", additional_special_tokens=SPECIAL[4:],
                                        model_max_length=2048, clean_up_tokenization_spaces=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1376, num_hidden_layers=6,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


# --- the two sides --------------------------------------------------------------------------------
def run_ours(train_file: Path, model: Path, options, packing: bool = False) -> dict:
    from ragtune.train.common import LoraOptions
    from ragtune.train.sft import train_sft

    result = train_sft(train_file, model=str(model), mode="lora", options=options, lora=LoraOptions(**LORA),
                       packing=packing, progress=False)
    train = result.metrics["train"]
    return {"tokens": train["train_tokens"], "runtime": train["train_runtime"],
            "samples_per_second": train["train_samples_per_second"], "steps": train["global_step"]}


def run_plain(rows: list[dict], model_path: Path, options, workdir: Path) -> dict:
    """What a user of transformers + peft writes: template, mask the prompt, pad per batch, Trainer."""
    import warnings

    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, PrinterCallback, Trainer,
                              TrainingArguments, set_seed)

    from ragtune.train.common import quiet_transformers  # the same quiet logging as our side

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    dataset = []
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["messages"][:-1], add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
        full = full[:options.max_length]
        dataset.append({"input_ids": full, "attention_mask": [1] * len(full),
                        "labels": [-100] * len(prompt) + full[len(prompt):]})
    set_seed(options.seed)
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(model_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=LORA["r"], lora_alpha=LORA["alpha"],
                                                 lora_dropout=LORA["dropout"], target_modules=LORA["target_modules"]))
    args = TrainingArguments(output_dir=str(workdir), per_device_train_batch_size=options.batch_size,
                             max_steps=options.max_steps, learning_rate=options.learning_rate,
                             weight_decay=options.weight_decay, warmup_steps=options.warmup_ratio, seed=options.seed,
                             logging_steps=options.logging_steps, save_strategy="steps", save_steps=options.max_steps,
                             report_to="none", disable_tqdm=True, dataloader_pin_memory=False,
                             include_num_input_tokens_seen="non_padding")
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100))
    trainer.remove_callback(PrinterCallback)
    with quiet_transformers():
        output = trainer.train()
    return {"tokens": trainer.state.num_input_tokens_seen, "runtime": output.metrics["train_runtime"],
            "samples_per_second": output.metrics["train_samples_per_second"], "steps": output.global_step}


def side_by_side(repetitions: int, rows: list[dict], train_file: Path, model: Path, options, workdir: Path,
                 packing_runs: int) -> dict:
    """Alternating runs (order flipped each repetition): tokens/s of each side."""
    runs: dict[str, list[dict]] = {"ours": [], "plain": [], "ours_packing": []}
    order = []
    for rep in range(repetitions):
        order += [("ours", "plain") if rep % 2 == 0 else ("plain", "ours")]
    for rep, sides in enumerate(order):
        for side in sides:
            folder = workdir / f"run-{side}-{rep}"
            if side == "ours":
                figures = run_ours(train_file, model, options.model_copy(update={"output_dir": str(folder)}))
            else:
                figures = run_plain(rows, model, options, folder)
            figures["tokens_per_second"] = figures["tokens"] / figures["runtime"]
            runs[side].append(figures)
            log(f"{rep + 1}/{repetitions} {side}: {figures['tokens_per_second']:.0f} tokens/s "
                f"({figures['tokens']} tokens, {figures['runtime']:.1f} s, {figures['steps']} steps)")
            shutil.rmtree(folder, ignore_errors=True)
    for rep in range(packing_runs):  # information only: packing trains on fewer, fuller sequences
        folder = workdir / f"run-packing-{rep}"
        figures = run_ours(train_file, model, options.model_copy(update={"output_dir": str(folder)}), packing=True)
        figures["tokens_per_second"] = figures["tokens"] / figures["runtime"]
        runs["ours_packing"].append(figures)
        log(f"packing {rep + 1}/{packing_runs}: {figures['tokens_per_second']:.0f} tokens/s ({figures['steps']} steps)")
        shutil.rmtree(folder, ignore_errors=True)
    ours = median(r["tokens_per_second"] for r in runs["ours"])
    plain = median(r["tokens_per_second"] for r in runs["plain"])
    same_tokens = len({r["tokens"] for r in runs["ours"] + runs["plain"]}) == 1
    return {"repetitions": repetitions, "runs": runs, "median_tokens_per_second_ours": ours,
            "median_tokens_per_second_plain": plain, "ratio_ours_over_plain": ours / plain if plain else None,
            "same_tokens_on_both_sides": same_tokens, "target_ratio_min": TARGET,
            "target_met": bool(plain and ours / plain >= TARGET),
            "median_tokens_per_second_ours_packing": median(r["tokens_per_second"] for r in runs["ours_packing"])
            if runs["ours_packing"] else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/squad-v1.1-dev"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=12)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--context-chars", type=int, default=600, help="Paragraphs are cut to this many characters.")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--packing-runs", type=int, default=0, help="Extra runs of ours with --packing (information only).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--result", type=Path, default=None, help="Result file (default benchmarks/results/train-sft-speed.json).")
    args = parser.parse_args(argv)
    source = args.data / "dev-v1.1-a.json"
    if not source.is_file():
        fail(f"{source} is missing (see ../shared/data/INDEX.md). Nothing was measured.")

    import torch

    from ragtune.train.common import TrainOptions

    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="bench-train-sft-"))
    try:
        all_rows = squad_rows(source, args.context_chars)
        rows = all_rows[:args.batch_size * args.max_steps]  # one pass: every row once, same order on both sides
        train_file = workdir / "train.jsonl"
        train_file.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        started = time.perf_counter()
        model = build_model(workdir / "model", [m["content"] for row in all_rows for m in row["messages"]],
                            args.vocab_size, args.seed)
        log(f"model and tokenizer built in {time.perf_counter() - started:.1f} s; {len(rows)} rows")
        options = TrainOptions(seed=args.seed, learning_rate=args.learning_rate, batch_size=args.batch_size,
                               max_steps=args.max_steps, warmup_ratio=0.1, max_length=args.max_length,
                               save_steps=args.max_steps, logging_steps=5, output_dir=str(workdir / "ours"))
        payload = header(settings={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
        payload.update({
            "benchmark": "train-sft-speed",
            "what": "LoRA SFT training speed, ragtune train sft vs plain transformers Trainer + peft",
            "model": {"architecture": "LlamaForCausalLM", "layers": 6, "hidden": 512, "heads": 8, "kv_heads": 2,
                      "intermediate": 1376, "vocab": args.vocab_size, "weights": "random (seeded)",
                      "parameters": _parameters(model)},
            "lora": LORA, "options": options.model_dump(),
            "data": {"source": "SQuAD v1.1 dev (first questions in file order) as chat rows", "rows": len(rows),
                     "fingerprint": fingerprint([source], args.data.parent)},
            "gpu": {"measured": False, "why": "no CUDA device on this machine"} if not torch.cuda.is_available() else None,
        })
        warm = options.model_copy(update={"max_steps": 2, "save_steps": 2, "output_dir": str(workdir / "warm")})
        run_ours(train_file, model, warm)  # first-run costs (allocator, kernels) paid outside the timed runs
        run_plain(rows, model, warm, workdir / "warm-plain")
        payload["side_by_side"] = side_by_side(args.repetitions, rows, train_file, model, options, workdir,
                                               args.packing_runs)
        result = payload["side_by_side"]
        log(f"ours {result['median_tokens_per_second_ours']:.0f} vs plain {result['median_tokens_per_second_plain']:.0f} "
            f"tokens/s: ratio {result['ratio_ours_over_plain']:.3f} (target >= {TARGET})")
        payload["seconds_total"] = time.perf_counter() - started
        payload["machine_at_end"] = {"loadavg_1_5_15": machine()["loadavg_1_5_15"]}
        path = write_result("train-sft-speed", payload, args.result)
        log(f"wrote {path}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _parameters(folder: Path) -> int:
    import math

    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())


if __name__ == "__main__":
    main()
