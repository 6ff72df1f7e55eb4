"""The trainer's small parts: schedules, early stopping, time budget, run names, config changes."""
from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
import torch

from segtrain.config import Config, load_config
from segtrain.config.schema import OptimConfig
from segtrain.errors import UserError
from segtrain.train.config_changes import check_resume_compatible
from segtrain.train.optim import build_optimizer
from segtrain.train.schedule import Schedule, lr_factor
from segtrain.run.directory import make_run_name
from segtrain.train.stopping import EarlyStopping, TimeBudget


def test_cosine_warms_up_linearly_then_decays_to_min_lr():
    cfg = OptimConfig(lr=1.0, schedule="cosine", warmup_steps=4, min_lr=0.1)
    factors = [lr_factor(s, 14, cfg) for s in range(15)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == pytest.approx(1.0) and factors[9] == pytest.approx(0.55)
    assert factors[14] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))


def test_onecycle_rises_from_lr_over_25_then_anneals():
    cfg = OptimConfig(schedule="onecycle")
    assert lr_factor(0, 100, cfg) == pytest.approx(1 / 25)
    assert lr_factor(30, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(100, 100, cfg) == pytest.approx(1e-4)


def test_constant_schedule_is_flat_after_its_warm_up():
    cfg = OptimConfig(schedule="constant", warmup_steps=2)
    assert [lr_factor(s, 10, cfg) for s in range(5)] == [0.5, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("name", ["default.yaml", "demo.yaml"])
def test_the_shipped_schedules_warm_up_to_the_lr_then_decay_to_nothing(name):
    """The measured default (docs/defaults.md): linear warm-up, cosine decay."""
    optim = load_config(Path(__file__).resolve().parents[1] / "configs" / name).optim
    total = 10 * optim.warmup_steps
    factors = [lr_factor(s, total, optim) for s in range(total + 1)]
    peak = factors.index(max(factors))
    assert optim.schedule == "cosine" and peak == optim.warmup_steps - 1 and max(factors) == 1.0
    assert all(a < b for a, b in zip(factors[:peak], factors[1:peak + 1]))
    assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1:])) and factors[-1] == 0.0


def test_schedule_state_round_trips_through_a_checkpoint():
    cfg = OptimConfig(lr=0.1, schedule="cosine", warmup_steps=3)
    model = torch.nn.Linear(2, 1)
    opt = build_optimizer(cfg, model.parameters())
    sched = Schedule(cfg, opt, total_steps=20, monitor_mode="max")
    for _ in range(7):
        opt.step()
        sched.step()
    opt2 = build_optimizer(cfg, model.parameters())
    sched2 = Schedule(cfg, opt2, total_steps=20, monitor_mode="max")
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict(), 20)
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_plateau_with_warmup_is_refused():
    model = torch.nn.Linear(2, 1)
    cfg = OptimConfig(schedule="plateau", warmup_steps=5)
    with pytest.raises(UserError, match="optim.warmup_steps"):
        Schedule(cfg, build_optimizer(cfg, model.parameters()), 10, "max")


def test_early_stopping_counts_validations_without_improvement():
    early = EarlyStopping("iou", patience=2, min_delta=0.01)
    assert early.update(0.5) and not early.update(0.505) and not early.should_stop
    assert not early.update(0.4) and early.should_stop
    loss = EarlyStopping("loss", patience=None)
    assert loss.update(1.0) and loss.update(0.9) and not loss.update(0.95) and not loss.should_stop


def test_time_budget_keeps_room_for_a_step_validation_and_checkpoint():
    budget = TimeBudget(limit_s=100, margin_s=10)
    budget.record_step(20)
    budget.record_validation(30)
    budget.record_checkpoint(5)
    budget.start -= 60  # 40 s left
    assert not budget.exhausted(validation_next=False)  # 20 + 5 + 10 = 35 fits
    assert budget.exhausted(validation_next=True)  # 20 + 30 + 5 + 10 = 65 does not
    assert not TimeBudget(None).exhausted(True)


def test_time_budget_takes_a_later_deadline_from_its_file_when_it_changes(tmp_path):
    deadline = tmp_path / "deadline"
    budget = TimeBudget(limit_s=100, margin_s=10, deadline_file=deadline)
    assert 99 < budget.remaining() <= 100  # no file yet: the limit it was given
    deadline.write_text(f"{time.time() + 3600}\n")  # qextend: an hour from now
    assert 3599 < budget.remaining() <= 3600
    deadline.write_text("not a number")
    assert 3599 < budget.remaining() <= 3600  # an unreadable deadline changes nothing


def test_run_names_are_readable_and_differ_by_overrides():
    when = dt.datetime(2026, 11, 28, 17, 5, 9)
    a = make_run_name("configs/demo.yaml", ["train.epochs=3"], when)
    assert a.startswith("demo-") and a.endswith("-20261128-170509")
    assert a != make_run_name("configs/demo.yaml", ["train.epochs=4"], when)


def test_resume_accepts_safe_changes_with_a_note_and_refuses_others(tmp_path):
    old = Config()
    new = load_config(Path(__file__).parents[1] / "configs" / "default.yaml")
    with pytest.raises(UserError, match=r"^data\.(num_workers|tile_size|tiles_per_epoch)|^loss|^model|^optim|^train"):
        check_resume_compatible(old, new, tmp_path / "config.yaml")
    more = Config()
    more.train.epochs, more.data.root = 80, "/scratch/job/data"
    notes = check_resume_compatible(old, more, tmp_path / "config.yaml")
    assert notes == ["config change accepted on resume: data.root: 'data/demo' -> '/scratch/job/data'",
                     "config change accepted on resume: train.epochs: 50 -> 80"]


def test_a_finished_job_run_finds_its_data_through_the_recorded_source(tmp_path):
    from segtrain.run.directory import RunDir, locate_data

    storage = tmp_path / "storage-data"
    storage.mkdir()
    run = RunDir(tmp_path / "run")
    run.create()
    gone = str(tmp_path / "scratch" / "data")  # the staged copy, cleaned after the job
    assert locate_data(run.path, gone) == gone
    run.info.update(data_source=str(storage))
    assert locate_data(run.path, gone) == str(storage)
    assert locate_data(run.path, str(storage), given="/elsewhere") == "/elsewhere"
