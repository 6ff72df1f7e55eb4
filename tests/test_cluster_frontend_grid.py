"""Grid files: expansion into points, overrides that read back exactly, manifests for job arrays."""
import json
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from segtrain.cluster.frontend.grid import format_override, load_grid, manifest_point, write_manifest
from segtrain.cluster.pbs import PBS
from segtrain.config import load_config, parse_override
from segtrain.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def grid_file(tmp_path: Path, text: str) -> Path:
    (tmp_path / "base.yaml").write_text("train: {epochs: 2}\n")
    path = tmp_path / "g.yaml"
    path.write_text("base: base.yaml\n" + text)
    return path


def test_product_is_every_combination_in_file_order(tmp_path):
    grid = load_grid(grid_file(tmp_path, "product:\n  optim.lr: [0.1, 0.2]\n  optim.name: [adam, sgd]\n"))
    assert [p.own for p in grid.points] == [["optim.lr=0.1", "optim.name=adam"], ["optim.lr=0.1", "optim.name=sgd"],
                                            ["optim.lr=0.2", "optim.name=adam"], ["optim.lr=0.2", "optim.name=sgd"]]


def test_zip_takes_lists_together_and_combines_with_the_product(tmp_path):
    grid = load_grid(grid_file(tmp_path, "product: {train.seed: [1, 2]}\n"
                                         "zip: {optim.name: [adam, sgd], optim.lr: [0.001, 0.01]}\n"))
    assert [p.label for p in grid.points] == [
        "train.seed=1 optim.name=adam optim.lr=0.001", "train.seed=1 optim.name=sgd optim.lr=0.01",
        "train.seed=2 optim.name=adam optim.lr=0.001", "train.seed=2 optim.name=sgd optim.lr=0.01"]


def test_explicit_points_follow_the_combinations_and_common_overrides_come_first(tmp_path):
    grid = load_grid(grid_file(tmp_path, "overrides: [train.epochs=5]\nproduct: {optim.lr: [0.1]}\n"
                                         "points:\n  - {loss.terms: {mse: 1.0}}\n  - {}\n"), extra=["train.seed=3"])
    assert [p.overrides for p in grid.points] == [
        ["train.epochs=5", "train.seed=3", "optim.lr=0.1"],
        ["train.epochs=5", "train.seed=3", 'loss.terms={"mse": 1.0}'],
        ["train.epochs=5", "train.seed=3"]]
    assert grid.points[2].label == "(the base config)" and grid.base == tmp_path / "base.yaml"


def test_a_grid_with_no_axes_is_the_base_config_alone(tmp_path):
    assert [p.overrides for p in load_grid(grid_file(tmp_path, "")).points] == [[]]


@pytest.mark.parametrize("text, message", [
    ("zip: {optim.lr: [1, 2], optim.name: [adam]}\n", "same length"),
    ("product: {optim.lr: []}\n", "non-empty list"),
    ("product: {optim.lr: 0.1}\n", "non-empty list"),
    ("product: {optim.lr: [1]}\nzip: {optim.lr: [2]}\n", "both product and zip"),
    ("product: {lr: [1]}\n", "section.key"),
    ("points: [{run.name: x}]\n", "set by the submission"),
    ("points: optim.lr\n", "list of mappings"),
    ("sweep: {}\n", "unknown key 'sweep'"),
    ("overrides: [epochs]\n", "expected section.key=value"),
])
def test_malformed_grid_files_are_refused_naming_the_key(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        load_grid(grid_file(tmp_path, text))


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=5), inner, max_size=3),
    max_leaves=6)


@given(VALUES)
def test_every_grid_value_is_written_as_an_override_that_reads_back_exactly(value):
    try:
        text = format_override("logging.wandb.tags", value, "test")
    except UserError:  # refused, never changed
        return
    assert parse_override(text)[1] == value


def test_strings_that_yaml_would_read_as_something_else_are_quoted():
    assert format_override("a.b", "auto", "t") == "a.b=auto"
    assert format_override("a.b", "null", "t") == 'a.b="null"'
    assert format_override("a.b", "1e-3", "t") == 'a.b="1e-3"'
    assert format_override("a.b", "x: y", "t") == 'a.b="x: y"'


def test_manifest_gives_each_subjob_its_points_config_and_overrides(tmp_path):
    grid = load_grid(grid_file(tmp_path, "product: {optim.lr: [0.1, 0.2]}\n"))
    path = tmp_path / "manifest.json"
    write_manifest(path, grid, "configs/base.yaml", ["g-00", "g-01"], "now")
    assert manifest_point(path, 1, PBS.array_variable) == ("configs/base.yaml", ["optim.lr=0.2"])
    assert json.loads(path.read_text())["points"][1]["run_name"] == "g-01"


@pytest.mark.parametrize("index, message", [(None, "PBS_ARRAY_INDEX is unset"), (5, "no point 5")])
def test_manifest_refuses_a_job_that_is_not_one_of_its_subjobs(tmp_path, index, message):
    grid = load_grid(grid_file(tmp_path, "product: {optim.lr: [0.1, 0.2]}\n"))
    write_manifest(tmp_path / "m.json", grid, "c.yaml", ["a", "b"], "now")
    with pytest.raises(UserError, match=message):
        manifest_point(tmp_path / "m.json", index, PBS.array_variable)


@pytest.mark.parametrize("name, points", [("loss", 9), ("lr_optim", 10)])
def test_shipped_grids_expand_and_every_point_is_a_valid_config(name, points):
    grid = load_grid(REPO / "configs" / "grids" / f"{name}.yaml")
    assert len(grid.points) == points
    for point in grid.points:
        load_config(grid.base, point.overrides)


def test_loss_grid_covers_the_planned_study():
    grid = load_grid(REPO / "configs" / "grids" / "loss.yaml")
    configs = [load_config(grid.base, point.overrides).loss for point in grid.points]
    assert {c.pos_weight for c in configs if c.terms == {"bce": 1.0}} == {None, "auto", 5.0}
    assert {c.dice_mode for c in configs if c.terms == {"dice": 1.0}} == {"per_sample", "per_batch"}
    assert len([c for c in configs if set(c.terms) == {"bce", "dice"}]) == 3
    assert any(c.terms == {"mse": 1.0} for c in configs)
