"""Submitting predictions: scenes collected and sharded, done scenes left out, nothing overwritten."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import REPO
from segtrain.cluster.pbs.directives import parse_qsub_args
from segtrain.cluster.frontend.predict_plan import ArrayOptions, collect_scenes, plan_predictions, shard_scenes
from segtrain.cluster.frontend.predict_status import folder_status
from segtrain.cluster.pbs import PBS
from segtrain.cluster.job.stage import sha256_file
from segtrain.cluster.predictions import (DONE, FAILED, PENDING, PredictSettings, remove_temporaries, scene_identity,
                                          scene_state, write_done, write_failed)
from segtrain.cluster.site import get_site
from segtrain.errors import UserError


@pytest.fixture
def scenes(tmp_path, small_data_ro) -> Path:
    """The scenes in a submit folder (with the job script)."""
    folder = tmp_path / "work" / "scenes"
    shutil.copytree(small_data_ro / "scenes", folder)
    shutil.copytree(REPO / "jobs", tmp_path / "work" / "jobs")
    return folder


def names(paths) -> list[str]:
    return [p.name for p in paths]


def test_scenes_come_from_files_folders_globs_and_list_files_each_once(scenes):
    work = scenes.parent
    (work / "more").mkdir()
    (work / "more" / "b.tif").write_bytes(b"x")
    (work / "list.txt").write_text("# my scenes\nmore/b.tif\n\nscenes/scene_001.tif  # again\n")
    found = collect_scenes(["scenes/scene_001.tif", "list.txt", "scenes/scene_00[23].tif", "more"], work)
    assert names(found) == ["scene_001.tif", "b.tif", "scene_002.tif", "scene_003.tif"]
    assert all(p.is_absolute() for p in found)
    assert len(collect_scenes(["scenes"], work)) == len(list(scenes.iterdir()))


@pytest.mark.parametrize("items, message", [(["nope.tif"], "nope.tif: scene, folder or list file not found"),
                                            (["scenes/*.png"], "no file matches"),
                                            (["bad.txt"], r"bad.txt:2: missing.tif: scene not found"),
                                            (["scenes/scene_001.tif", "other/scene_001.tif"], "same name as")])
def test_a_scene_that_is_not_there_or_would_collide_is_refused_by_name(scenes, items, message):
    work = scenes.parent
    (work / "bad.txt").write_text("scenes/scene_001.tif\nmissing.tif\n")
    (work / "other").mkdir()
    shutil.copy(scenes / "scene_001.tif", work / "other")
    with pytest.raises(UserError, match=message):
        collect_scenes(items, work)


def test_shards_hold_at_most_n_scenes_and_the_byte_budget_a_larger_scene_alone(tmp_path):
    paths = []
    for i, size in enumerate([10, 10, 50, 10, 10, 10, 10]):
        paths.append(tmp_path / f"s{i}.tif")
        paths[-1].write_bytes(b"x" * size)
    assert [len(s) for s in shard_scenes(paths, 3)] == [3, 3, 1]
    assert [names(s) for s in shard_scenes(paths, 10, 30)] == [["s0.tif", "s1.tif"], ["s2.tif"],
                                                               ["s3.tif", "s4.tif", "s5.tif"], ["s6.tif"]]
    with pytest.raises(UserError, match="--per-job: must be at least 1"):
        shard_scenes(paths, 0)


def plan(run: Path, work: Path, **kw):
    return plan_predictions(run, ["scenes"], Path("preds"), PredictSettings(), ArrayOptions(site=get_site("metacentrum")),
                            work, **kw)


def test_the_plan_is_a_job_array_over_a_manifest_and_writes_nothing(trained_run_ro, scenes):
    work = scenes.parent
    sub = plan(trained_run_ro, work, per_job=3)
    n = len(list(scenes.iterdir()))
    assert [len(s) for s in sub.manifest.shards] == [3] * (n // 3) + ([n % 3] if n % 3 else [])
    request = parse_qsub_args(sub.argv[1:], environ={})
    assert request.array == f"0-{len(sub.manifest.shards) - 1}" and str(request.script) == "jobs/predict.pbs"
    assert request.variables["MANIFEST"] == str(sub.manifest_path.relative_to(work))
    assert not (work / "preds").exists()
    one = plan(trained_run_ro, work, per_job=100)
    assert parse_qsub_args(one.argv[1:], environ={}).array is None and "SHARD=0" in one.argv[one.argv.index("-v") + 1]


def test_on_slurm_the_plan_is_an_sbatch_array_of_jobs_predict_slurm_with_the_project_account(trained_run_ro, scenes):
    work = scenes.parent
    from segtrain.cluster.frontend.plan import resource_options

    opts = ArrayOptions(site=get_site("karolina"), resources=resource_options(get_site("karolina")), account="OPEN-1-2")
    sub = plan_predictions(trained_run_ro, ["scenes"], Path("preds"), PredictSettings(), opts, work, per_job=3)
    argv = sub.argv
    assert argv[:2] == ["sbatch", "--parsable"] and argv[-1] == "jobs/predict.slurm"
    assert f"--array=0-{len(sub.manifest.shards) - 1}" in argv and "--account=OPEN-1-2" in argv and "--partition=qgpu" in argv
    exported = argv[-2].split(",")
    assert f"MANIFEST={sub.manifest_path.relative_to(work)}" in exported and "SCRATCH_BASE=/scratch/project/open-1-2" in exported
    with pytest.raises(UserError, match="karolina accepts no job without a project account"):
        plan_predictions(trained_run_ro, ["scenes"], Path("preds"), PredictSettings(),
                         ArrayOptions(site=get_site("karolina")), work, per_job=3)


def test_done_scenes_are_left_out_failed_ones_tried_again_and_others_outputs_never_overwritten(trained_run_ro, scenes):
    work = scenes.parent
    sub = plan(trained_run_ro, work, per_job=100)
    manifest = sub.manifest
    [first, second, *rest] = [Path(s) for s in manifest.shards[0]]
    out = work / "preds"
    out.mkdir()
    (out / f"{first.stem}_mask.tif").write_bytes(b"mask")
    mask = out / f"{first.stem}_mask.tif"
    write_done(manifest, scene_identity(first), {mask.name: {"size": 4, "sha256": sha256_file(mask)}})
    write_failed(manifest, second, "corrupt")
    again = plan(trained_run_ro, work, per_job=100)
    assert (again.done, again.failed_before) == (1, 1) and str(first) not in again.manifest.shards[0]
    assert str(second) in again.manifest.shards[0]
    assert scene_state(manifest, first, checksums=True) == (DONE, "")
    mask.write_bytes(b"MASK")  # same size, other bytes: only the checksum sees it
    assert scene_state(manifest, first) == (DONE, "") and scene_state(manifest, first, checksums=True)[0] == PENDING
    assert scene_state(manifest, second) == (FAILED, "corrupt")
    record = json.loads((out / f"{first.stem}.json").read_text())
    (out / f"{first.stem}.json").write_text(json.dumps({**record, "scene": "/elsewhere/" + first.name}))
    with pytest.raises(UserError, match="holds the outputs of another scene of the same name"):
        plan(trained_run_ro, work)


def test_status_counts_each_subjobs_scenes(trained_run_ro, scenes):
    work = scenes.parent
    sub = plan(trained_run_ro, work, per_job=3)
    sub.manifest.save(sub.manifest_path)
    write_failed(sub.manifest, Path(sub.manifest.shards[1][0]), "LIBDEFLATE_BAD_DATA")
    status = folder_status(work / "preds", PBS)
    pending = [len(shard) for shard in sub.manifest.shards]
    pending[1] -= 1
    assert [row.counts[PENDING] for row in status.subjobs] == pending
    assert status.subjobs[1].counts[FAILED] == 1 and not status.complete
    assert f"failed {Path(sub.manifest.shards[1][0]).name}: LIBDEFLATE_BAD_DATA" in status.text()


def test_temporaries_of_a_killed_copy_are_removed_for_the_subjobs_scenes_only(tmp_path):
    for name in (".a_mask.tif.k2j.tmp", ".a.json.x.tmp", ".b_mask.tif.k2j.tmp", "a_mask.tif"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".a_prob.tif.x9.tmp").mkdir()
    removed = remove_temporaries(tmp_path, [Path("/data/a.tif")])
    assert sorted(p.name for p in removed) == [".a.json.x.tmp", ".a_mask.tif.k2j.tmp", ".a_prob.tif.x9.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b_mask.tif.k2j.tmp", "a_mask.tif"]
