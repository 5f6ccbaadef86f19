"""Training sequences for generative fine-tuning: each row rendered the way the `hf` generator will
prompt the model, with the loss on the answer tokens only.

A row is a conversation (`messages`) or a `prompt`/`completion` pair (one user turn, one assistant
turn). It is rendered with the tokenizer's chat template when it has one, else with the plain
`Role: text` lines the hf generator falls back to; every assistant turn (with the end-of-turn
tokens the template puts after it) is what the model learns to write, the rest is context.

>>> example = causal_example(tokenizer, [{"role": "user", "content": "2+2?"},
...                                      {"role": "assistant", "content": "4"}])   # doctest: +SKIP
>>> tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE])  # doctest: +SKIP
'4</s>\\n'

A seq2seq model (T5) reads the conversation up to its last assistant turn and learns that turn.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from ragtune.errors import ConfigError

IGNORE = -100  # label of a token that carries no loss (transformers' ignore_index)

Renderer = Callable[[list[dict], bool], str]  # (messages, add_generation_prompt) -> text


class Sequence(NamedTuple):
    input_ids: list[int]
    labels: list[int]
    """IGNORE where the token is context, else the token id (causal) / the target ids (seq2seq)."""


def row_messages(row: dict, fmt: str) -> list[dict]:
    """The conversation of a canonical `messages` or `prompt_completion` row (see ragtune.train.data)."""
    if fmt == "messages":
        return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    return [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]


def plain_text(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """`Role: text` paragraphs: the hf generator's prompt for a model without a chat template."""
    text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
    return text + "\n\nAssistant:" if add_generation_prompt else text


def renderer(tokenizer: Any, use_template: bool = True) -> tuple[Renderer, bool]:
    """(render, templated): the chat template when the tokenizer has one (and `use_template`),
    else `plain_text`. A templated text already holds its special tokens (BOS and the like)."""
    if use_template and getattr(tokenizer, "chat_template", None):
        from jinja2 import TemplateError

        def render(messages: list[dict], add_generation_prompt: bool) -> str:
            if not messages:
                return ""
            try:
                return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
            except TemplateError:  # a template that refuses a system role (Gemma): merged as the hf generator does
                if messages[0]["role"] != "system" or len(messages) < 2:
                    raise
                merged = [{**messages[1], "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}]
                return tokenizer.apply_chat_template(merged + messages[2:], add_generation_prompt=add_generation_prompt,
                                                     tokenize=False)
        return render, True
    return (lambda messages, add_generation_prompt: plain_text(messages, add_generation_prompt)), False


def _answer_spans(render: Renderer, messages: list[dict], full: str) -> list[tuple[int, int]]:
    """Character spans of `full` written by the assistant: for turn i, from the end of the prompt
    before it (rendered with the generation prompt) to the end of the conversation through it.
    A turn the template does not render as a prefix of the whole (some templates rewrite earlier
    turns) is left out of the loss."""
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i == 0:
            continue
        start, through = render(messages[:i], True), render(messages[:i + 1], False)
        if full.startswith(through) and through.startswith(start) and len(through) > len(start):
            spans.append((len(start), len(through)))
    return spans


def causal_example(tokenizer: Any, messages: list[dict] | None = None, *, use_template: bool = True,
                   prompt: str | None = None, completion: str | None = None) -> Sequence:
    """Token ids and labels of one conversation (or, with `prompt` and `completion`, of that plain
    text pair) for a causal LM. Labels are IGNORE outside the assistant's turns; an empty label
    list means the row has nothing to learn (no assistant turn after a prompt)."""
    if prompt is not None:  # plain text: prompt then completion, no conversation format
        full, spans, templated = prompt + completion, [(len(prompt), len(prompt) + len(completion))], False
    else:
        render, templated = renderer(tokenizer, use_template)
        full = render(messages, False)
        spans = _answer_spans(render, messages, full)
    if not spans:
        return Sequence([], [])
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("generative fine-tuning needs a fast tokenizer (a tokenizer.json in the model folder) to "
                          "find the answer tokens; convert the tokenizer with transformers and save it again")
    encoded = tokenizer(full, add_special_tokens=not templated, return_offsets_mapping=True, verbose=False)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    labels = [token if any(a < end and b > start for start, end in spans) else IGNORE
              for token, (a, b) in zip(ids, offsets)]
    ends_with_answer = spans[-1][1] == len(full)
    if not templated and ends_with_answer and tokenizer.eos_token_id is not None:
        ids, labels = ids + [tokenizer.eos_token_id], labels + [tokenizer.eos_token_id]  # learn to stop
    return Sequence(list(ids), labels)


def seq2seq_example(tokenizer: Any, messages: list[dict] | None = None, *, prompt: str | None = None,
                    completion: str | None = None) -> Sequence:
    """Encoder ids of the conversation before its last assistant turn (as the hf generator renders
    it for a seq2seq model) and that turn's ids as labels; or `prompt` -> `completion` as given."""
    if prompt is None:
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=0)
        if last == 0:
            return Sequence([], [])
        prompt, completion = plain_text(messages[:last]), messages[last]["content"]
    source = tokenizer(prompt, verbose=False)["input_ids"]
    target = tokenizer(text_target=completion, verbose=False)["input_ids"]
    return Sequence(list(source), list(target))


def truncate(example: Sequence, max_length: int) -> Sequence:
    """The first `max_length` tokens (a seq2seq source and target are each cut to it)."""
    return Sequence(example.input_ids[:max_length], example.labels[:max_length])


def has_answer(example: Sequence) -> bool:
    return any(label != IGNORE for label in example.labels)
