"""`segtrain check` warns, in one line each, when the lr schedule does not fit the run's steps; `segtrain train`
says the same as a new run starts."""
from __future__ import annotations

from segtrain.config import load_config
from segtrain.train.budget import schedule_warnings, steps_per_epoch
from conftest import REPO
from test_preflight import run_check, write_config
from trainutil import train_run


def test_a_gpu_config_shortened_on_the_command_line_warns_that_the_lr_never_peaks(capsys, tmp_path, small_data_ro):
    """The trap met in issue 26: default.yaml's 200 warm-up steps against a run of 4 steps."""
    cfg = tmp_path / "short.yaml"
    cfg.write_text(f"extends: {REPO / 'configs' / 'default.yaml'}\ndata:\n  root: {small_data_ro}\n")
    code, out, err = run_check(capsys, cfg, "train.epochs=2", "data.tiles_per_epoch=64")
    assert code == 0, err
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: optim.warmup_steps: 200 is not below the run's 4 steps (train.epochs 2 x 2 "
                        "steps/epoch): the lr never reaches its peak optim.lr 0.001 (at most 2e-05); set "
                        "optim.warmup_steps to at most 1"]


def test_a_warm_up_of_most_of_the_run_warns_that_the_peak_is_barely_reached(capsys, tmp_path, small_data_ro):
    code, out, _ = run_check(capsys, write_config(tmp_path, small_data_ro), "train.epochs=2", "train.batch_size=16",
                             "optim.lr=0.003", "optim.warmup_steps=20")  # 256 tiles an epoch: 16 steps
    assert code == 0
    assert [line for line in out.splitlines() if line.startswith("warning:")] == [
        "warning: optim.warmup_steps: 20 is 62% of the run's 32 steps (train.epochs 2 x 16 steps/epoch): the lr "
        "barely reaches its peak optim.lr 0.003 before it decays; set optim.warmup_steps to at most 8"]


def test_the_shipped_configs_fit_their_own_runs(capsys, tmp_path, small_data_ro):
    code, out, _ = run_check(capsys, write_config(tmp_path, small_data_ro))
    assert code == 0 and "warning" not in out
    default = load_config(REPO / "configs" / "default.yaml")
    assert schedule_warnings(default, *steps_per_epoch(default, [])) == []


def test_grid_sampling_counts_the_grid_tiles_as_an_upper_bound(small_data_ro):
    from segtrain.preflight import check_dataset

    cfg = load_config(REPO / "configs" / "demo.yaml", [f"data.root={small_data_ro}", "data.sampling=grid",
                                                        "train.epochs=1", "train.batch_size=2", "optim.warmup_steps=1000"])
    summary = check_dataset(cfg)
    per_epoch, exact = steps_per_epoch(cfg, [summary.infos[f.name] for f in summary.splits["train"]])
    assert not exact and per_epoch >= 1
    assert f"the run's at most {per_epoch} steps" in schedule_warnings(cfg, per_epoch, exact)[0]


def test_no_warm_up_or_a_plateau_schedule_needs_no_warning():
    cfg = load_config(REPO / "configs" / "demo.yaml", ["optim.warmup_steps=0"])
    assert schedule_warnings(cfg, 1) == []
    cfg = load_config(REPO / "configs" / "demo.yaml", ["optim.warmup_steps=0", "optim.schedule=plateau"])
    assert schedule_warnings(cfg, 1) == []


def test_train_gives_the_same_warning_once_as_a_new_run_starts(tmp_path, small_data_ro):
    """6 steps an epoch (48 tiles, batch 8): a warm-up of 12 steps never ends in a one-epoch run."""
    expected = ("warning: optim.warmup_steps: 12 is not below the run's 6 steps (train.epochs 1 x 6 steps/epoch): the "
                "lr never reaches its peak optim.lr 0.01 (at most 0.005); set optim.warmup_steps to at most 1")
    code, out = train_run(tmp_path / "run", small_data_ro, "train.epochs=1", "optim.warmup_steps=12")
    assert code == 0, out
    assert [line for line in out.splitlines() if "warning: optim.warmup_steps" in line] == [expected]
    assert expected in (tmp_path / "run" / "logs" / "train.log").read_text()
    code, out = train_run(tmp_path / "run", small_data_ro, "train.epochs=2", "optim.warmup_steps=12")
    assert code == 0, out  # resumed: its schedule is the checkpoint's plan, which the log describes instead
    assert "warning: optim.warmup_steps" not in out
