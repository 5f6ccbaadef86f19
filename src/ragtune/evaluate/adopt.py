"""`ragtune compare --adopt`: write the recommended strategy into ragtune.yaml, so `ask`, `classify`
and `serve` use it. The file is edited in place (only the settings that change), so the user's
comments and layout survive.

| adopted                     | settings written                                                   |
|-----------------------------|--------------------------------------------------------------------|
| qa `rag-bm25/dense/hybrid`  | rag.mode (and rag.k for a rag-hybrid@k<N> variant)                 |
| qa `rag-hybrid+rerank`      | rag.mode: hybrid (rag.rerank.model is already set)                 |
| qa `rag+reader`             | rag.mode: hybrid, generator.backend: reader, generator.model       |
| qa `finetune+rag`, `raft`   | rag.mode: hybrid, generator.adapter (the trained LoRA adapter)     |
| qa `closed-book`, `finetune`| `ask` always retrieves: refused with the reason                    |
| classify (any)              | classify.strategy, classify.model (the saved strategy folder)      |
"""
from __future__ import annotations

import os
from pathlib import Path

from ragtune.errors import ConfigError


def adoption(comparison: dict, project_folder: Path, rerank_configured: bool = False) -> dict[str, object]:
    """Dotted settings -> values that make the recommended strategy the project's default, as it
    was measured (a plain rag variant turns a configured reranker off)."""
    best = comparison.get("best")
    if not best:
        raise ConfigError("nothing to adopt: the comparison recommends no strategy")
    summary = next(s for s in comparison["strategies"] if s["name"] == best)

    def relative(path: str) -> str:
        try:
            return os.path.relpath(path, project_folder)
        except ValueError:
            return path

    no_rerank = {"rag.rerank.model": None} if rerank_configured and "+rerank" not in best else {}
    if comparison["task"] == "classify":
        return {"classify.strategy": best, "classify.model": relative(summary["model_folder"])}
    if best.startswith("rag-"):
        from ragtune.evaluate.qa_run import rag_variant

        mode, k = rag_variant(best)
        return {"rag.mode": mode, **({"rag.k": k} if k else {}), **no_rerank}
    if best == "rag+reader":
        return {"rag.mode": "hybrid", "generator.backend": "reader", "generator.model": relative(summary["model_folder"]),
                "generator.min_score": _or(summary["config"].get("reader_min_score"), 0.35), **no_rerank}
    if best in ("finetune+rag", "raft"):
        return {"rag.mode": "hybrid", "generator.adapter": relative(summary["model_folder"]), **no_rerank}
    raise ConfigError(f"cannot adopt {best}: it answers without retrieval, and `ragtune ask`/`serve` always retrieve. "
                      + (f"Its adapter is in {summary.get('model_folder')}: set generator.adapter to use it with "
                         "retrieval (what finetune+rag measured)." if summary.get("model_folder") else ""))


def set_yaml_values(path: Path, values: dict[str, object]) -> None:
    """Set dotted keys in a YAML file, keeping everything else (comments included) as it was; then
    check that the result still loads as a valid config (else the file is left unchanged)."""
    import yaml

    from ragtune.config import load_config

    text = path.read_text(encoding="utf-8")
    for dotted, value in values.items():
        rendered = "null" if value is None else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")
        text = _set_one(text, dotted.split("."), rendered)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        load_config(tmp)
    except ConfigError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{path}: not changed: the new settings would not be valid:\n"
                          + str(exc).replace(str(tmp), str(path))) from None
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _set_one(text: str, keys: list[str], value: str) -> str:
    import yaml

    root = yaml.compose(text) if text.strip() else None
    node, depth, parent_line, parent_column = root, 0, None, -2
    while isinstance(node, yaml.MappingNode) and depth < len(keys):
        if node.flow_style:
            raise ConfigError(f"ragtune.yaml: '{'.'.join(keys[:depth]) or 'the file'}' is written in flow style "
                              "({...}); write it as an indented block so --adopt can edit it")
        match = [(k, v) for k, v in node.value if getattr(k, "value", None) == keys[depth]]
        if not match:
            break
        key_node, child = match[0]
        parent_line, parent_column = key_node.start_mark.line, key_node.start_mark.column
        node, depth = child, depth + 1
    lines = text.splitlines(keepends=True)
    if depth == len(keys):  # the key exists: replace its scalar value in place
        if not isinstance(node, yaml.ScalarNode):
            raise ConfigError(f"ragtune.yaml: '{'.'.join(keys)}' is not a single value")
        start, end = node.start_mark, node.end_mark
        if start.line != end.line:
            raise ConfigError(f"ragtune.yaml: '{'.'.join(keys)}' spans several lines; write it on one line")
        line = lines[start.line]
        if start.index == end.index:  # an empty value (`key:`): the value goes after the colon
            before = line[:start.column].rstrip()
            lines[start.line] = before + " " + value + line[start.column:]
        else:
            lines[start.line] = line[:start.column] + value + line[end.column:]
        return "".join(lines)
    if isinstance(node, yaml.ScalarNode) and depth > 0:
        if node.value not in ("", "null", "~"):
            raise ConfigError(f"ragtune.yaml: '{'.'.join(keys[:depth])}' holds a value, not a section")
        lines[parent_line] = lines[parent_line][:node.start_mark.column if node.start_mark.index != node.end_mark.index
                                                else len(lines[parent_line].rstrip("\n"))].rstrip() + "\n"
        node = None
    # Missing from depth on: insert the rest under the deepest existing section (or at the end),
    # indented like that section's other keys.
    if isinstance(node, yaml.MappingNode) and node.value:
        indent = node.value[0][0].start_mark.column
    else:
        indent = parent_column + 2 if parent_line is not None else 0
    block = [f"{' ' * (indent + 2 * i)}{key}:" + (f" {value}\n" if i == len(keys) - depth - 1 else "\n")
             for i, key in enumerate(keys[depth:])]
    if parent_line is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        return "".join(lines) + "".join(block)
    return "".join(lines[:parent_line + 1] + block + lines[parent_line + 1:])


def _or(value, default):
    return default if value is None else value
