"""Configs: strict schema, extends, overrides, one-line errors that name the file and key."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from segtrain.config import Config, load_config, to_yaml
from segtrain.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def error_of(path: Path, overrides=()) -> str:
    with pytest.raises(UserError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_shipped_configs_load():
    demo = load_config(REPO / "configs" / "demo.yaml")
    default = load_config(REPO / "configs" / "default.yaml")
    assert demo.model.arch == "unet" and default.model.arch == "Unet"
    assert demo.train.device == "cpu"
    assert demo.loss.terms == default.loss.terms  # inherited through extends


def test_typo_names_file_key_and_suggests_the_closest(tmp_path):
    cfg = write(tmp_path / "my.yaml", "data:\n  tile_sise: 128\n")
    assert error_of(cfg) == f"{cfg}: data.tile_sise: unknown key (did you mean 'tile_size'?)"


def test_unknown_section_is_refused(tmp_path):
    cfg = write(tmp_path / "my.yaml", "trian:\n  epochs: 3\n")
    assert "trian: unknown key (did you mean 'train'?)" in error_of(cfg)


def test_wrong_type(tmp_path):
    cfg = write(tmp_path / "my.yaml", "train:\n  epochs: ten\n")
    assert error_of(cfg) == f"{cfg}: train.epochs: expected an integer, got 'ten' (str)"


def test_bool_is_not_an_integer(tmp_path):
    cfg = write(tmp_path / "my.yaml", "train:\n  epochs: true\n")
    assert "train.epochs: expected an integer" in error_of(cfg)


def test_out_of_range(tmp_path):
    cfg = write(tmp_path / "my.yaml", "data:\n  min_valid_fraction: 1.5\n")
    assert "data.min_valid_fraction: must be <= 1.0, got 1.5" in error_of(cfg)


def test_choice_with_suggestion(tmp_path):
    cfg = write(tmp_path / "my.yaml", "optim:\n  name: adamm\n")
    message = error_of(cfg)
    assert "optim.name: must be one of 'adam', 'adamw', 'sgd', got 'adamm'" in message
    assert "did you mean 'adam" in message


def test_cross_field_rule_names_the_key(tmp_path):
    cfg = write(tmp_path / "my.yaml", "data:\n  tile_size: 64\n  overlap: 64\n")
    assert "data.overlap: must be smaller than data.tile_size (64), got 64" in error_of(cfg)


def test_unknown_loss_term(tmp_path):
    cfg = write(tmp_path / "my.yaml", "loss:\n  terms: {bce: 1.0, dise: 1.0}\n")
    assert "loss.terms.dise: unknown loss term" in error_of(cfg)


def test_error_names_the_parent_file_that_set_the_value(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  epochs: -1\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\nmodel:\n  depth: 3\n")
    assert error_of(child).startswith(f"{tmp_path / 'base.yaml'}: train.epochs: must be >= 1")


def test_extends_merges_sections_and_replaces_free_form_maps(tmp_path):
    write(tmp_path / "base.yaml", "train:\n  epochs: 5\n  batch_size: 4\nloss:\n  terms: {bce: 1.0, dice: 1.0}\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\ntrain:\n  epochs: 7\nloss:\n  terms: {mse: 1.0}\n")
    cfg = load_config(child)
    assert (cfg.train.epochs, cfg.train.batch_size) == (7, 4)
    assert cfg.loss.terms == {"mse": 1.0}


def test_extends_cycle_is_refused(tmp_path):
    write(tmp_path / "a.yaml", "extends: b.yaml\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\n")
    assert "'extends' forms a cycle" in error_of(tmp_path / "a.yaml")


def test_overrides_are_parsed_as_yaml(tmp_path):
    cfg = write(tmp_path / "my.yaml", "{}\n")
    loaded = load_config(cfg, ["data.bands=[0, 2]", "optim.lr=3e-4", "loss.pos_weight=auto",
                               "model.encoder_weights=null", "logging.wandb.mode=disabled"])
    assert loaded.data.bands == [0, 2]
    assert loaded.optim.lr == pytest.approx(3e-4)
    assert loaded.loss.pos_weight == "auto"
    assert loaded.logging.wandb.mode == "disabled"


def test_bad_override_is_named(tmp_path):
    cfg = write(tmp_path / "my.yaml", "{}\n")
    assert error_of(cfg, ["train.epochs=many"]) == "override 'train.epochs=many': train.epochs: expected an integer, got 'many' (str)"
    assert error_of(cfg, ["train.epochs"]) == "override 'train.epochs': expected section.key=value"
    assert "override 'train.epoch=3': train.epoch: unknown key (did you mean 'epochs'?)" in error_of(cfg, ["train.epoch=3"])


def test_yaml_syntax_error_names_the_line(tmp_path):
    cfg = write(tmp_path / "my.yaml", "train:\n  epochs: 3\n  batch_size: [1, 2\n")
    assert error_of(cfg).startswith(f"{cfg}:")
    assert "invalid YAML" in error_of(cfg)


def test_duplicate_key_is_refused(tmp_path):
    cfg = write(tmp_path / "my.yaml", "train:\n  epochs: 3\n  epochs: 4\n")
    assert error_of(cfg) == f"{cfg}:3: invalid YAML: duplicate key 'epochs'"


def test_missing_file(tmp_path):
    assert error_of(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: config file not found"


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(REPO / "configs" / "demo.yaml", ["train.epochs=3"])
    again = load_config(write(tmp_path / "resolved.yaml", to_yaml(cfg)))
    assert again == cfg
    assert yaml.safe_load(to_yaml(Config()))["train"]["epochs"] == Config().train.epochs


def test_yaml_words_off_and_no_are_words_and_only_true_false_are_booleans(tmp_path):
    cfg = write(tmp_path / "my.yaml", "train:\n  amp: off\n  compile: false\n  channels_last: True\n")
    loaded = load_config(cfg)
    assert (loaded.train.amp, loaded.train.compile, loaded.train.channels_last) == ("off", False, True)
    assert load_config(cfg, ["train.amp=off"]).train.amp == "off"
    assert "train.compile: expected true or false, got 'no' (str)" in error_of(cfg, ["train.compile=no"])
