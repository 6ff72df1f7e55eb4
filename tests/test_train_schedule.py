"""Learning-rate schedules across a resume: same length, bit-exact; another length, no jump."""
from __future__ import annotations

import pytest
import torch

from segtrain.config.schema import OptimConfig
from segtrain.train.optim import build_optimizer
from segtrain.train.schedule import Schedule, lr_factor

COSINE = OptimConfig(lr=0.1, schedule="cosine", warmup_steps=4)


def lrs_of(cfg: OptimConfig, total: int, steps: int, resume_at: int | None = None, new_total: int | None = None,
           old_state: bool = False) -> tuple[list[float], str | None]:
    """The lr of each of ``steps`` optimizer steps; resumed at ``resume_at`` with ``new_total`` when given."""
    model = torch.nn.Linear(2, 1)
    opt = build_optimizer(cfg, model.parameters())
    sched = Schedule(cfg, opt, total, "max")
    lrs, note = [], None
    for step in range(steps):
        if step == resume_at:
            state = sched.state_dict()
            if old_state:  # a checkpoint written before plans were stored
                state.pop("plan")
            opt2 = build_optimizer(cfg, model.parameters())  # in the trainer's order: built, then restored
            sched = Schedule(cfg, opt2, new_total, "max")
            opt2.load_state_dict(opt.state_dict())
            opt, note = opt2, sched.load_state_dict(state, total)
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs, note


def largest_jump(lrs: list[float]) -> float:
    return max(abs(b - a) for a, b in zip(lrs, lrs[1:]))


@pytest.mark.parametrize("old_state", [False, True])
def test_resuming_with_the_same_length_follows_the_same_lrs_exactly(old_state):
    straight, _ = lrs_of(COSINE, 40, 40)
    resumed, note = lrs_of(COSINE, 40, 40, resume_at=17, new_total=40, old_state=old_state)
    assert resumed == straight and note is None
    assert straight == [0.1 * lr_factor(s, 40, COSINE) for s in range(40)]


@pytest.mark.parametrize("old_state", [False, True])
def test_more_epochs_mid_schedule_continue_the_decay_smoothly(old_state):
    straight, _ = lrs_of(COSINE, 40, 40)
    resumed, note = lrs_of(COSINE, 40, 80, resume_at=20, new_total=80, old_state=old_state)
    assert "continues smoothly from step 20" in note and "to step 80 instead of 40" in note
    assert resumed[:21] == straight[:21]
    # No jump: the step across the resume is no larger than the decay's own steps, and the lr keeps
    # falling to the end (stretching the cosine in place jumped from 0.059 to 0.089 here).
    after = resumed[20:]
    assert largest_jump(resumed[19:]) <= largest_jump(straight)
    assert all(b <= a for a, b in zip(after, after[1:])) and after[-1] < 0.002


def test_more_epochs_after_the_schedule_ended_plan_a_new_one_with_warm_up():
    resumed, note = lrs_of(COSINE, 40, 80, resume_at=40, new_total=80)
    assert "had finished its cosine schedule of 40 steps" in note and "new one is planned over steps 40..80" in note
    assert resumed[40] == 0.0  # the last step of the old plan
    assert resumed[41:44] == pytest.approx([0.05, 0.075, 0.1])  # the config's warm-up again: a ramp to the peak
    assert max(resumed[40:]) == pytest.approx(0.1) and resumed[-1] < 0.002


def test_a_run_still_warming_up_keeps_its_warm_up_over_the_new_length():
    resumed, note = lrs_of(COSINE, 40, 80, resume_at=2, new_total=80)
    assert "still warming up" in note
    assert resumed == [0.1 * lr_factor(s, 80, COSINE) for s in range(80)]


def test_a_second_extension_builds_on_the_first():
    cfg = COSINE
    model = torch.nn.Linear(2, 1)
    opt = build_optimizer(cfg, model.parameters())
    sched = Schedule(cfg, opt, 40, "max")
    for _ in range(20):
        opt.step(), sched.step()
    sched2 = Schedule(cfg, opt, 60, "max")
    sched2.load_state_dict(sched.state_dict(), 40)
    for _ in range(10):
        opt.step(), sched2.step()
    sched3 = Schedule(cfg, opt, 60, "max")
    assert sched3.load_state_dict(sched2.state_dict(), 40) is None  # the stored plan, not the fallback length
    assert sched3.plan.segments == sched2.plan.segments


def test_a_constant_schedule_does_not_depend_on_the_length():
    cfg = OptimConfig(lr=0.1, schedule="constant", warmup_steps=4)
    straight, _ = lrs_of(cfg, 40, 60)
    resumed, note = lrs_of(cfg, 40, 60, resume_at=40, new_total=60)
    assert resumed == straight and note is None
