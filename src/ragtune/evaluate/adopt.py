"""`ragtune compare --adopt`: write the recommended strategy into ragtune.yaml, so `ask`, `classify`
and `serve` use it. The file is edited in place (only the settings that change), so the user's
comments and layout survive.

| adopted                     | settings written                                                   |
|-----------------------------|--------------------------------------------------------------------|
| qa `rag-bm25/dense/hybrid`  | rag.mode                                                           |
| qa `rag-hybrid+rerank`      | rag.mode: hybrid (rag.rerank.model is already set)                 |
| qa `rag+reader`             | rag.mode: hybrid, generator.backend: reader, generator.model       |
| qa `closed-book`            | nothing can make `ask` skip retrieval: refused with the reason     |
| classify (any)              | classify.strategy, classify.model (the saved strategy folder)      |
"""
from __future__ import annotations

import os
from pathlib import Path

from ragtune.errors import ConfigError


def adoption(comparison: dict, project_folder: Path) -> dict[str, object]:
    """Dotted settings -> values that make the recommended strategy the project's default."""
    best = comparison.get("best")
    if not best:
        raise ConfigError("nothing to adopt: the comparison recommends no strategy")
    summary = next(s for s in comparison["strategies"] if s["name"] == best)

    def relative(path: str) -> str:
        try:
            return os.path.relpath(path, project_folder)
        except ValueError:
            return path

    if comparison["task"] == "classify":
        return {"classify.strategy": best, "classify.model": relative(summary["model_folder"])}
    if best.startswith("rag-"):
        return {"rag.mode": best.split("-")[1].split("+")[0]}
    if best == "rag+reader":
        return {"rag.mode": "hybrid", "generator.backend": "reader", "generator.model": relative(summary["model_folder"]),
                "generator.min_score": summary["config"].get("reader_min_score", 0.2)}
    raise ConfigError(f"cannot adopt {best}: `ragtune ask` always retrieves; use the generator settings it was run "
                      "with directly")


def set_yaml_values(path: Path, values: dict[str, object]) -> None:
    """Set dotted keys in a YAML file, keeping everything else (comments included) as it was; then
    check that the result still loads as a valid config."""
    import yaml

    from ragtune.config import load_config

    text = path.read_text(encoding="utf-8")
    for dotted, value in values.items():
        text = _set_one(text, dotted.split("."), yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n..."))
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        load_config(tmp)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _set_one(text: str, keys: list[str], value: str) -> str:
    import yaml

    root = yaml.compose(text) if text.strip() else None
    node, depth = root, 0
    parent_line, indent = None, 0
    while isinstance(node, yaml.MappingNode) and depth < len(keys):
        match = [(k, v) for k, v in node.value if getattr(k, "value", None) == keys[depth]]
        if not match:
            break
        key_node, child = match[0]
        if node.flow_style:
            raise ConfigError(f"ragtune.yaml: '{'.'.join(keys[:depth + 1])}' is written in flow style ({{...}}); "
                              f"write that section as an indented block to let --adopt edit it")
        parent_line, indent = key_node.start_mark.line, key_node.start_mark.column
        node, depth = child, depth + 1
    lines = text.splitlines(keepends=True)
    if depth == len(keys):  # the key exists: replace its scalar value in place
        if not isinstance(node, yaml.ScalarNode):
            raise ConfigError(f"ragtune.yaml: '{'.'.join(keys)}' is not a single value")
        start, end = node.start_mark, node.end_mark
        if start.line != end.line:
            raise ConfigError(f"ragtune.yaml: '{'.'.join(keys)}' spans several lines; write it on one line")
        line = lines[start.line]
        lines[start.line] = line[:start.column] + value + line[end.column:]
        return "".join(lines)
    # Missing from depth on: insert the rest under the deepest existing section (or at the end).
    block = []
    for i, key in enumerate(keys[depth:]):
        pad = " " * ((indent + 2 if parent_line is not None else 0) + 2 * i)
        block.append(f"{pad}{key}:" + (f" {value}\n" if i == len(keys) - depth - 1 else "\n"))
    if parent_line is None:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        return "".join(lines) + "".join(block)
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "null", "~"):
        raise ConfigError(f"ragtune.yaml: '{'.'.join(keys[:depth])}' is empty; write it as a section")
    return "".join(lines[:parent_line + 1] + block + lines[parent_line + 1:])
