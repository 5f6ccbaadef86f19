"""The typed project config: starter file, YAML loading with file:line errors, dotted overrides."""
from __future__ import annotations

import pytest

from ragtune.config import (CONFIG_NAME, DEFAULT_EMBEDDER, ProjectConfig, apply_overrides, load_config,
                            write_starter)
from ragtune.errors import ConfigError, RagtuneError


def write_config(tmp_path, text: str):
    path = tmp_path / CONFIG_NAME
    path.write_text(text, encoding="utf-8")
    return path


def config_error(path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


# --- starter ------------------------------------------------------------------------------------
def test_starter_config_loads_and_equals_the_defaults(tmp_path):
    path = write_starter(tmp_path / "kb")
    assert path == tmp_path / "kb" / CONFIG_NAME
    text = path.read_text()
    assert text.lstrip().startswith("#")  # commented, for people to edit
    assert load_config(path) == ProjectConfig()
    assert load_config(path).embedder.model == DEFAULT_EMBEDDER


def test_starter_config_with_another_model(tmp_path):
    path = write_starter(tmp_path, model="/models/my-encoder")
    config = load_config(path)
    assert config.embedder.model == "/models/my-encoder"
    assert config.model_copy(update={"embedder": ProjectConfig().embedder}) == ProjectConfig()


def test_starter_refuses_to_overwrite(tmp_path):
    path = write_config(tmp_path, "retrieval: {k: 3}\n")
    with pytest.raises(ConfigError, match="already exists"):
        write_starter(tmp_path)
    assert path.read_text() == "retrieval: {k: 3}\n"


def test_every_field_has_a_description():
    def walk(model, prefix=""):
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            if hasattr(type(value), "model_fields"):
                yield from walk(value, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", field.description

    missing = [name for name, description in walk(ProjectConfig()) if not description]
    assert not missing


# --- loading ------------------------------------------------------------------------------------
def test_partial_config_keeps_other_defaults(tmp_path):
    path = write_config(tmp_path, "embedder:\n  backend: hashing\n  dimension: 64\nretrieval:\n  bm25: {k1: 1.2}\n")
    config = load_config(path)
    assert (config.embedder.backend, config.embedder.dimension) == ("hashing", 64)
    assert config.retrieval.bm25.k1 == 1.2
    assert config.retrieval.bm25.b == ProjectConfig().retrieval.bm25.b
    assert config.chunking == ProjectConfig().chunking


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_config_is_all_defaults(tmp_path, text):
    assert load_config(write_config(tmp_path, text)) == ProjectConfig()


def test_invalid_yaml_names_file_and_line(tmp_path):
    path = write_config(tmp_path, "embedder:\n  backend: hashing\nretrieval:\n  mode: bm25: x\n")
    message = config_error(path)
    assert message.startswith(f"{path}:4: not valid YAML")
    assert "Traceback" not in message


def test_top_level_must_be_a_mapping(tmp_path):
    path = write_config(tmp_path, "- embedder\n- retrieval\n")
    assert config_error(path).startswith(f"{path}: expected a mapping")


@pytest.mark.parametrize("text, line, field, reason", [
    ("retrieval:\n  k: 5\n  top_k: 3\n", 3, "retrieval.top_k", "Extra inputs are not permitted"),
    ("embedder: {backend: hashing}\nretrieval:\n  k: five\n", 3, "retrieval.k", "valid integer"),
    ("retrieval:\n  mode: fast\n", 2, "retrieval.mode", "'bm25', 'dense' or 'hybrid'"),
    ("chunking:\n  size: 200\n\n\nretrieval:\n  bm25:\n    b: 2\n", 7, "retrieval.bm25.b", "less than or equal to 1"),
    ("ingest:\n  include:\n    - '*.md'\n    - {bad: 1}\n", 4, "ingest.include.1", "valid string"),
    ("chunking: 200\n", 1, "chunking", "dictionary"),
])
def test_bad_field_names_file_line_and_dotted_field(tmp_path, text, line, field, reason):
    path = write_config(tmp_path, text)
    message = config_error(path)
    assert message.startswith(f"{path}:{line}: field '{field}': ")
    assert reason in message
    assert "ragtune init" in message  # says where to find valid settings


def test_every_bad_field_is_reported(tmp_path):
    path = write_config(tmp_path, "retrieval:\n  k: 0\n  fusion: max\n")
    message = config_error(path)
    assert f"{path}:2: field 'retrieval.k'" in message
    assert f"{path}:3: field 'retrieval.fusion'" in message


def test_unknown_section_names_the_line_of_its_key(tmp_path):
    path = write_config(tmp_path, "embedder:\n  backend: hashing\nretreival:\n  k: 5\n")
    assert config_error(path).startswith(f"{path}:3: field 'retreival'")


def test_missing_config_file(tmp_path):
    message = config_error(tmp_path / "nowhere" / CONFIG_NAME)
    assert "cannot read config" in message and "ragtune init" in message


def test_config_error_is_a_user_error():
    assert issubclass(ConfigError, RagtuneError) and ConfigError.exit_code == 2


# --- overrides ----------------------------------------------------------------------------------
def test_apply_overrides_with_dotted_keys():
    base = ProjectConfig()
    config = apply_overrides(base, {"retrieval.k": 3, "retrieval.bm25.k1": 1.5, "chunking.size": "64",
                                    "ingest.include": ["*.md"], "retrieval.mode": None})
    assert config.retrieval.k == 3
    assert config.retrieval.bm25.k1 == 1.5
    assert config.chunking.size == 64  # validated and coerced like YAML input
    assert config.ingest.include == ["*.md"]
    assert config.retrieval.mode == base.retrieval.mode  # None means "not given"
    assert base == ProjectConfig()  # a copy: the original is untouched


def test_apply_no_overrides_is_equal():
    assert apply_overrides(ProjectConfig(), {}) == ProjectConfig()


@pytest.mark.parametrize("overrides, field, reason", [
    ({"retrieval.k": 0}, "retrieval.k", "greater than or equal to 1"),
    ({"retrieval.k": "many"}, "retrieval.k", "valid integer"),
    ({"retrieval.mode": "fast"}, "retrieval.mode", "'bm25', 'dense' or 'hybrid'"),
    ({"retrieval.nope": 1}, "retrieval.nope", "Extra inputs are not permitted"),
])
def test_bad_override_value_is_a_config_error(overrides, field, reason):
    with pytest.raises(ConfigError) as info:
        apply_overrides(ProjectConfig(), overrides)
    message = str(info.value)
    assert message.startswith(f"command-line option: field '{field}': ")
    assert reason in message
