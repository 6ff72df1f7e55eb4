"""The job report: phases laid end to end from the job's marks and the trainer's sums, the printed
block, the training share of `segtrain runs`, the GPU figures, the queue wait from the scheduler and
the quality verdict of the run's own evaluation."""
from __future__ import annotations

import json

import pytest
import torch

from segtrain.cluster.pbs import PBS
from segtrain.cluster.slurm import SLURM
from segtrain.run.gpu_usage import GIB, GpuSampler, summarize
from segtrain.run.directory import RunDir
from segtrain.run.report import (OTHER, PHASES, TrainerClock, format_gpu, format_report, job_phases, job_report,
                                 run_quality, training_share)

# A job of 1000 s: environment 10, checks 20, staging 30, (rank 0 waits 5 for the other nodes), trainer
# launched at 65 and ended at 900, copy-back 900-950; 50 s after it (the report is made at its end).
MARKS = {"job_start": 1000.0, "checks_start": 1010.0, "checks_end": 1030.0, "stage_start": 1030.0,
         "stage_end": 1060.0, "launch": 1065.0, "copy_start": 1900.0, "copy_end": 1950.0}
TRAINER = {"first_step_at": 1105.0, "steps": 120, "data_wait_s": 150.0,
           "seconds": {"training": 600.0, "validation": 80.0, "checkpoints": 40.0}, "gpu": {"skipped": "no GPU"}}


def test_phases_are_laid_end_to_end_and_add_up_to_the_elapsed_time():
    phases = job_phases(MARKS, TRAINER)
    assert list(phases) == [*PHASES, OTHER]
    assert phases == {"environment": 10.0, "checks": 20.0, "staging": 30.0, "start-up": 40.0, "training": 600.0,
                      "validation": 80.0, "checkpoints": 40.0, "copy-back": 50.0, OTHER: 80.0}
    assert sum(phases.values()) == pytest.approx(950.0)


def test_a_trainer_that_reported_nothing_leaves_its_phases_unknown_and_its_time_in_other():
    phases = job_phases(MARKS, None)  # killed before its first checkpoint: run.json has no figures
    assert phases["training"] is phases["validation"] is phases["checkpoints"] is None
    assert phases["start-up"] == 835.0  # launch to its end: it never took a step
    assert sum(v for v in phases.values() if v is not None) == pytest.approx(950.0)


def test_a_job_that_ended_in_staging_has_no_start_up_and_ends_at_its_last_mark():
    marks = {k: MARKS[k] for k in ("job_start", "checks_start", "checks_end", "stage_start")} | {
        "copy_start": 1040.0, "copy_end": 1041.0}
    phases = job_phases(marks, None)
    assert phases["staging"] is None and phases["start-up"] is None and phases["copy-back"] == 1.0
    assert phases[OTHER] == pytest.approx(10.0)  # the failed staging: between its start and the copy-back


def test_the_trainer_clock_times_one_phase_at_a_time_from_the_first_batch_in_hand():
    ticks = iter([10.0, 12.0, 15.0, 16.0, 17.0, 20.0])  # the monotonic clock at each switch of phase
    clock = TrainerClock(now=lambda: next(ticks), wall=lambda: 1100.0)
    clock.step(data_s=9.0)  # 10: the first batch in hand; its wait (the workers starting) is start-up
    clock.step(data_s=0.5)
    with clock.phase("checkpoints"):  # 12
        with clock.phase("validation"):  # 15, and back to checkpoints at 16
            pass
    clock.stop()  # back to training at 17, until 20
    figures = clock.to_dict()
    assert (figures["first_step_at"], figures["steps"], figures["data_wait_s"]) == (1100.0, 2, 0.5)
    assert figures["seconds"] == {"training": 2.0 + 3.0, "validation": 1.0, "checkpoints": 3.0 + 1.0}


def test_the_report_block_shows_every_phase_with_its_share_and_the_data_wait():
    report = job_report("7.pbs", MARKS, TRAINER, queue_wait_s=3725.0)
    text = format_report(report)
    lines = text.splitlines()
    assert lines[0] == "---- job report 7.pbs: where the walltime went ----"
    assert lines[1].split() == ["queue", "wait", "1:02:05.0"]
    assert lines[2].split()[:2] == ["elapsed", "0:15:50.0"]
    assert [line.split()[0] for line in lines[3:12]] == [*PHASES, OTHER]
    assert lines[7].split()[:3] == ["training", "0:10:00.0", "63.2%"]
    assert "120 steps, waiting for data 25% of it" in lines[7]
    assert lines[-2].split() == ["GPU", "no", "GPU"]
    assert report["data_wait_share"] == 0.25 and report["phases_s"]["training"] == 600.0


def test_the_report_names_the_corrupt_segments_the_trainer_skipped():
    named = ["scenes/a.tif: tile 7 (rows 256-511, cols 768-1023)", "masks/b.tif: strip 3 (rows 48-63)"]
    text = format_report(job_report("7.pbs", MARKS, {**TRAINER, "corrupt_tiles": named}, None))
    assert "corrupt       2 segment(s) did not decode; the tiles touching them were skipped:" in text
    assert all(f"\n  {name}" in text for name in named)
    assert "corrupt" not in format_report(job_report("7.pbs", MARKS, TRAINER, None))


def test_unknown_figures_read_as_unknown_or_a_dash():
    text = format_report(job_report("7.pbs", {"job_start": 0.0, "checks_start": 2.0}, None, None))
    assert "queue wait    unknown" in text and "  training    -" in text
    assert text.splitlines()[-2] == "GPU           unknown (the trainer reported nothing)"


def test_training_share_of_a_run_is_over_its_reported_jobs():
    segments = [{"report": job_report("1", MARKS, TRAINER, None)}, {"report": None}, {},
                {"report": job_report("2", MARKS, {**TRAINER, "seconds": {"training": 300.0}}, None)}]
    assert training_share(segments) == pytest.approx(900.0 / 1900.0)
    assert training_share([{}, {"report": None}]) is None


def test_gpu_figures_average_the_utilization_and_keep_the_peak_memory():
    gpu = summarize([50.0, 100.0, 30.0, 60.0], [1 * GIB, 3 * GIB, 2 * GIB, 2 * GIB], 80 * GIB, gpus=2)
    assert gpu == {"gpus": 2, "samples": 2, "utilization_mean": 60.0, "utilization_max": 100.0,
                   "memory_peak_gib": 3.0, "memory_total_gib": 80.0}
    assert "60 % on average (max 100 %), peak memory 3.0 of 80.0 GiB, 2 samples" in format_gpu(gpu)


def test_on_a_cpu_nothing_is_sampled():
    assert GpuSampler(torch.device("cpu")).start().stop() == {"skipped": "no GPU"}


def test_a_gpu_is_sampled_with_nvml_or_the_report_says_why_not():
    gpu = GpuSampler(torch.device("cuda", 0), interval_s=0.05).start().stop()
    if torch.cuda.is_available():
        assert gpu["gpus"] >= 1 and gpu["samples"] >= 1 and gpu["memory_total_gib"] > 0
    else:  # no driver here: NVML cannot start, and training goes on
        assert gpu["skipped"].startswith("no GPU figures (NVML cannot start: ")


def test_queue_wait_is_qtime_to_stime_in_qstat_f():
    qstat = ("Job Id: 7.pbs-m1\n    qtime = Mon Nov 30 10:00:00 2026\n    stime = Mon Nov 30 11:02:05 2026\n"
             "    job_state = R\n")
    assert PBS.queue_wait(qstat, "7.pbs-m1") == 3725.0
    assert PBS.queue_wait("Job Id: 7.pbs-m1\n    job_state = R\n", "7.pbs-m1") is None
    assert PBS.queue_wait(None, "7.pbs-m1") is None


def test_queue_wait_is_submit_to_start_time_in_scontrol_show_job():
    show = "JobId=14 JobName=segtrain\n   SubmitTime=2026-11-30T10:00:00 EligibleTime=2026-11-30T10:00:00\n" \
           "   StartTime=2026-11-30T10:00:42 EndTime=2026-12-01T10:00:42\n"
    assert SLURM.queue_wait(show, "14") == 42.0
    assert SLURM.queue_wait("JobId=14 StartTime=Unknown SubmitTime=2026-11-30T10:00:00\n", "14") is None


# ---- the quality verdict ------------------------------------------------------------------------
VERDICT = "the model beats the best per-pixel classifier (an MLP trained to a plateau: ...) by +0.0400 IoU"


def evaluated_run(tmp_path, trained_to: int = 128, **baseline) -> str:
    """A run trained to step ``trained_to`` and evaluated (segtrain eval's metrics.json) at step 128."""
    info = RunDir(tmp_path).info
    info.start_segment("run", None, "7.pbs", 0)
    info.end_segment("done", 0, end_step=trained_to)
    converged = {"stopped": "plateau", "iou": 0.8}
    metrics = {"split": "test", "checkpoint": "best", "step": 120, "run_step": 128, "threshold": 0.45, "iou": 0.84,
               "baseline": {"logistic": converged, "mlp": converged, "model_minus_best_iou": 0.04, "verdict": VERDICT,
                            "floor_not_converged": [], **baseline}}
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps(metrics))
    return format_report(job_report("7.pbs", MARKS, TRAINER, None, run_quality(tmp_path))).splitlines()[-1]


def test_the_report_ends_with_the_verdict_the_runs_own_evaluation_recorded(tmp_path):
    assert evaluated_run(tmp_path) == f"quality       test split, best checkpoint (step 120), threshold 0.45: {VERDICT}"
    assert run_quality(tmp_path)["margin"] == 0.04


def test_a_verdict_against_a_baseline_that_did_not_converge_is_never_shown(tmp_path):
    line = evaluated_run(tmp_path, floor_not_converged=["mlp"])
    assert VERDICT not in line and "no verdict (the per-pixel mlp of" in line
    assert line.endswith("stopped at its step budget before converging: the gap eval states is only a bound)")


def test_an_evaluation_from_before_converged_baselines_gives_no_verdict(tmp_path):
    evaluated_run(tmp_path)
    metrics_path = tmp_path / "eval" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    del metrics["baseline"]["floor_not_converged"]  # as segtrain eval wrote it before issue 26
    metrics_path.write_text(json.dumps(metrics))
    assert "predates per-pixel baselines trained to convergence" in run_quality(tmp_path)["none"]


def test_an_evaluation_of_an_earlier_state_of_the_run_gives_no_verdict(tmp_path):
    line = evaluated_run(tmp_path, trained_to=256)  # trained on after it was evaluated
    assert VERDICT not in line
    assert f"evaluated the run at step 128; it has trained to step 256 since); `segtrain eval {tmp_path}`" in line


def test_without_an_evaluation_the_report_says_there_is_none_yet_and_how_to_get_one(tmp_path):
    assert run_quality(tmp_path) == {"none": "not evaluated yet", "how": f"`segtrain eval {tmp_path}` compares the "
                                     "model with per-pixel classifiers trained to convergence"}
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"split": "test", "iou": 0.8}))
    assert "(eval --no-baseline)" in run_quality(tmp_path)["none"]
    line = format_report(job_report("7.pbs", MARKS, TRAINER, None)).splitlines()[-1]
    assert line.startswith("quality       no verdict (not looked up by this job); `segtrain eval RUN` compares")
