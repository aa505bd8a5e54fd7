"""Config: recipes, dotted overrides, one-line errors naming the key."""
from __future__ import annotations

import pytest

from deepfoundry import DeepfoundryError
from deepfoundry.config import apply_overrides, load_config, parse_value, recipe_names


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_validates(name: str) -> None:
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.description


def test_overrides_types_and_nesting() -> None:
    cfg = load_config("lenet5-digits", {"optim.lr": "1e-3", "trainer.epochs": 3, "model.dropout": 0.2,
                                        "optim.scheduler.name": "cosine"})
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.trainer.epochs == 3
    assert cfg.model.builder_kwargs() == {"dropout": 0.2}
    assert cfg.optim.scheduler.name == "cosine"
    assert parse_value("true") is True and parse_value("[1, 2]") == [1, 2] and parse_value("1e-4") == 1e-4


def test_precision_32_as_a_number_means_the_text() -> None:
    """``--set trainer.precision=32`` parses to the int 32 (as YAML's ``precision: 32``): it means "32"; 16 is
    still refused with the key named."""
    assert load_config("lenet5-digits", {"trainer.precision": parse_value("32")}).trainer.precision == "32"
    assert load_config("lenet5-digits", {"trainer.precision": "bf16"}).trainer.precision == "bf16"
    with pytest.raises(DeepfoundryError, match=r"config key 'trainer.precision'"):
        load_config("lenet5-digits", {"trainer.precision": 16})


def test_list_overrides() -> None:
    raw = apply_overrides({"a": {"b": 1}}, ["a.c=2", "d=x"])
    assert raw == {"a": {"b": 1, "c": 2}, "d": "x"}
    with pytest.raises(DeepfoundryError, match="key=value"):
        apply_overrides({}, ["novalue"])


def test_unknown_key_names_it() -> None:
    with pytest.raises(DeepfoundryError, match=r"^unknown config key 'trainer.epoch'$"):
        load_config("lenet5-digits", {"trainer.epoch": 3})


def test_wrong_type_names_key_and_value() -> None:
    with pytest.raises(DeepfoundryError, match=r"config key 'trainer.epochs'.*integer.*'ten'"):
        load_config("lenet5-digits", {"trainer.epochs": "ten"})
    with pytest.raises(DeepfoundryError, match=r"config key 'optim.name'"):
        load_config("lenet5-digits", {"optim.name": "adamx"})


def test_unknown_recipe_suggests() -> None:
    with pytest.raises(DeepfoundryError, match="did you mean 'lenet5-digits'"):
        load_config("lenet5-digit")


def test_yaml_file(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nmodel: {name: mlp}\ntrainer: {epochs: 2}\n")
    assert load_config(str(path)).trainer.epochs == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(DeepfoundryError, match="not valid YAML"):
        load_config(str(bad))


def test_configuration_reference_lists_every_key():
    """docs/configuration.md names every key of RunConfig (it is written by hand: this keeps it in step)."""
    from pathlib import Path

    from pydantic import BaseModel

    from deepfoundry.config import RunConfig

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text(encoding="utf-8")

    def keys(model: type[BaseModel], prefix: str = ""):
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                yield from keys(ann, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}"

    missing = [k for k in keys(RunConfig) if f"`{k}`" not in doc]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_yaml_error_has_line_and_column_and_empty_files_are_refused(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrainer: {epochs: [1, }\n")
    with pytest.raises(DeepfoundryError, match=r"not valid YAML at line 2, column \d+: "):
        load_config(str(bad))
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(DeepfoundryError, match=r"config file '.*empty.yaml' is empty"):
        load_config(str(empty))
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    with pytest.raises(DeepfoundryError, match=r"config file '.*folder.yaml' is a directory"):
        load_config(str(folder))


@pytest.mark.parametrize("overrides, pattern", [
    ({"seed": -1}, r"config key 'seed'"), ({"seed": 2**32}, r"config key 'seed'"),
    ({"optim.lr": float("inf")}, r"config key 'optim.lr': expected a finite number"),
    ({"model.sizes": [1, float("nan")]}, r"config key 'model.sizes.1': expected a finite number"),
    ({"data.a..b": 1}, r"has an empty part"),
    ({"trainer.x\ny": 1}, r"^unknown config key 'trainer.x\\ny'$"),
])
def test_values_no_generator_or_builder_takes_are_refused(overrides: dict, pattern: str) -> None:
    with pytest.raises(DeepfoundryError, match=pattern):
        load_config("lenet5-digits", overrides)
