"""Numerical health: a non-finite loss stops the run clearly and keeps the last good checkpoint."""
from __future__ import annotations

import json

import pytest
import torch

import segtrain.train.model_parts as model_parts
from segtrain.config import load_config
from segtrain.train.trainer import TrainOptions, train
from trainutil import tiny_args

pytestmark = pytest.mark.slow


@pytest.fixture
def overflow_on_step_3(monkeypatch):
    """Models whose 3rd training forward returns inf, as an overflow would."""
    real_build = model_parts.build_model

    def build_model_that_overflows_on_step_3(*args, **kwargs):
        model = real_build(*args, **kwargs)
        calls = {"n": 0}

        def poison(module, inputs, output):
            calls["n"] += module.training
            return output * float("inf") if module.training and calls["n"] == 3 else output

        model.register_forward_hook(poison)
        return model

    monkeypatch.setattr(model_parts, "build_model", build_model_that_overflows_on_step_3)


def test_non_finite_loss_stops_with_a_message_naming_the_step(small_data_ro, tmp_path, overflow_on_step_3, capsys):
    config, *overrides = tiny_args(small_data_ro, "train.checkpoint_every_steps=2")
    run_dir = tmp_path / "run"
    code = train(load_config(config, overrides), TrainOptions(config, overrides, run_dir=run_dir))
    assert code == 1
    assert "non-finite loss or gradient at step 3 (epoch 0)" in capsys.readouterr().out
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["position"]["step"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_a_non_finite_step_between_logged_steps_is_caught_before_the_next_checkpoint(small_data_ro, tmp_path,
                                                                                     overflow_on_step_3, capsys):
    """Steps are not checked one by one (that would wait for the GPU each time): the bad step 3 is
    found at the checkpoint after step 4, which is then not written."""
    config, *overrides = tiny_args(small_data_ro, "train.checkpoint_every_steps=2", "logging.every_steps=100")
    run_dir = tmp_path / "run"
    code = train(load_config(config, overrides), TrainOptions(config, overrides, run_dir=run_dir))
    assert code == 1
    assert "non-finite loss or gradient at step 3 (epoch 0), noticed after step 4" in capsys.readouterr().out
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["position"]["step"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
