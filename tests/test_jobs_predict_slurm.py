"""jobs/predict.slurm end to end against a real Slurm (CI's: scripts/slurm_local.sh start).

The same job as jobs/predict.pbs (tests/test_jobs_predict_pbs.py has its edge cases): a trained
tiny run predicts generated scenes as a Slurm job array submitted by ``scripts/submit --predict
--scheduler slurm``; every output is verified and every scratch folder emptied.
"""
from __future__ import annotations

from segtrain.cluster.slurm import SLURM
from test_jobs_predict_pbs import assert_verified, write_scenes
from test_jobs_train_pbs import make_repo
from test_jobs_train_slurm import pytestmark as slurm_marks, scratch_base, submit, submitted_ids, wait_until_ended

pytestmark = slurm_marks


def test_five_scenes_over_two_array_tasks_give_verified_outputs_and_status_from_squeue_or_sacct(
        tmp_path, small_data_ro, trained_run_ro):
    repo = make_repo(tmp_path / "segtrain", small_data_ro)
    write_scenes(repo / "scenes", 5)
    result = submit(repo, "--predict", str(trained_run_ro), "scenes", "--out", "preds", "--per-job", "3",
                    "--name", "predict-test")
    [array_id] = submitted_ids(result)
    for task in (SLURM.subjob_id(array_id, 0), SLURM.subjob_id(array_id, 1)):
        fields = wait_until_ended(task)
        text = (repo / f"predict-test.o{fields['JobId']}").read_text()
        assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0"), text
        assert f"job {task} (predict-test)" in text
    assert_verified(repo / "preds", [f"scene_{i:02d}" for i in range(5)])
    assert list(scratch_base(repo).iterdir()) == []
    status = submit(repo, "--status", "preds")
    assert "5 scenes: 5 done, 0 failed, 0 pending" in status.stdout
    assert f"{array_id}_0" in status.stdout and f"{array_id}_1" in status.stdout and "ended (0)" in status.stdout
