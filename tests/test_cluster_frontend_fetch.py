"""fetch_results: run directories copied with rsync between two local folders, as from the cluster."""
from __future__ import annotations

from pathlib import Path

import pytest

from segtrain.cli import main
from segtrain.cluster.frontend.fetch import location, rsync_argv
from segtrain.config import load_config, to_yaml
from segtrain.errors import UserError
from segtrain.run.metrics_log import MetricsLog
from segtrain.run.directory import RunDir

REPO = Path(__file__).resolve().parents[1]


def make_run(path: Path, ious: list[float], status: str = "done") -> Path:
    """A run directory as the trainer leaves it, written by the trainer's own writers."""
    run = RunDir(path)
    run.create()
    run.config.write_text(to_yaml(load_config(REPO / "configs" / "demo.yaml")))
    run.info.start_segment(path.name, None, None, 0)
    log = MetricsLog(run.metrics, None)
    for epoch, iou in enumerate(ious):
        log.write({"step": 6 * (epoch + 1), "epoch": epoch, "split": "val", "iou": iou, "loss": 1 - iou})
    log.close()
    run.info.end_segment(status, 0 if status == "done" else 3, end_step=6 * len(ious))
    for name in ("last.pt", "best.pt"):
        (run.checkpoints / name).write_bytes(b"weights" * 1000)
    return path


@pytest.fixture
def cluster(tmp_path) -> Path:
    """The runs folder on "storage": a run, and a grid folder with two runs and its manifest."""
    runs = tmp_path / "storage" / "runs"
    make_run(runs / "demo-abc123-20260301-120000", [0.2, 0.5, 0.4])
    make_run(runs / "loss-20260301-130000" / "loss-00", [0.3], status="stopped")
    make_run(runs / "loss-20260301-130000" / "loss-01", [0.6, 0.7])
    (runs / "loss-20260301-130000" / "manifest.json").write_text("{}")
    return runs


def test_fetch_brings_runs_without_checkpoints_and_lists_them_with_status_and_best_metric(cluster, tmp_path, capsys):
    laptop = tmp_path / "laptop" / "runs"
    assert main(["fetch", str(cluster), str(laptop)]) == 0
    for run in ("demo-abc123-20260301-120000", "loss-20260301-130000/loss-00", "loss-20260301-130000/loss-01"):
        assert (laptop / run / "run.json").read_bytes() == (cluster / run / "run.json").read_bytes()
        assert (laptop / run / "metrics.jsonl").is_file() and not (laptop / run / "checkpoints").exists()
    assert (laptop / "loss-20260301-130000" / "manifest.json").is_file()
    table = capsys.readouterr().out
    assert table.splitlines()[1].split() == ["RUN", "STATUS", "EPOCH", "STEP", "LAST", "iou", "BEST", "iou", "TRAINING"]
    assert "demo-abc123-20260301-120000  done     2      18    0.4000    0.5000" in table
    assert "loss-00" in table and "stopped" in table and "loss-01" in table


def test_a_repeated_fetch_copies_only_what_changed_and_removes_nothing(cluster, tmp_path, capsys):
    laptop = tmp_path / "laptop"
    main(["fetch", str(cluster), str(laptop)])
    (laptop / "my-notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["fetch", str(cluster), str(laptop)]) == 0
    assert "0 files copied" in capsys.readouterr().out
    with open(cluster / "loss-20260301-130000" / "loss-00" / "metrics.jsonl", "a") as f:
        f.write('{"step": 12, "epoch": 1, "split": "val", "iou": 0.9}\n')
    assert main(["fetch", str(cluster), str(laptop)]) == 0
    out = capsys.readouterr().out
    assert "1 files copied" in out and "loss-00" in out and "loss-01" not in out
    assert (laptop / "my-notes.txt").read_text() == "mine"


def test_a_fetch_cut_short_is_completed_by_the_next_one(cluster, tmp_path):
    laptop = tmp_path / "laptop"
    main(["fetch", str(cluster), str(laptop)])
    metrics = laptop / "demo-abc123-20260301-120000" / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes()[:20])
    main(["fetch", str(cluster), str(laptop)])
    assert metrics.read_bytes() == (cluster / "demo-abc123-20260301-120000" / "metrics.jsonl").read_bytes()


@pytest.mark.parametrize("choice, expected", [("best", ["best.pt"]), ("all", ["best.pt", "last.pt"])])
def test_checkpoints_come_only_when_asked(cluster, tmp_path, choice, expected):
    laptop = tmp_path / "laptop"
    assert main(["fetch", str(cluster), str(laptop), "--checkpoints", choice]) == 0
    assert sorted(p.name for p in (laptop / "loss-20260301-130000" / "loss-01" / "checkpoints").iterdir()) == expected


def test_grid_option_brings_one_grid_folder(cluster, tmp_path):
    laptop = tmp_path / "laptop"
    assert main(["fetch", str(cluster), str(laptop), "--grid", "loss-20260301-130000"]) == 0
    assert sorted(p.name for p in laptop.iterdir()) == ["loss-20260301-130000"]
    assert (laptop / "loss-20260301-130000" / "loss-01" / "run.json").is_file()


def test_dry_run_lists_files_and_copies_nothing(cluster, tmp_path, capsys):
    laptop = tmp_path / "laptop"
    assert main(["fetch", str(cluster), str(laptop), "--dry-run"]) == 0
    assert "demo-abc123-20260301-120000/run.json" in capsys.readouterr().out
    assert list(laptop.iterdir()) == []


def test_without_rsync_the_error_says_how_to_get_it(cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert main(["fetch", str(cluster), str(tmp_path / "laptop")]) == 2
    assert "rsync is not installed here: install it" in capsys.readouterr().err


def test_remote_and_local_locations_are_told_apart(tmp_path):
    assert location("me@skirit.metacentrum.cz:/storage/brno2/home/me/runs").remote
    odd = tmp_path / "with:colon"
    odd.mkdir()
    assert location(str(odd)).text == str(odd) and not location(str(odd)).remote
    assert location("relative").text == str(Path("relative").absolute())
    with pytest.raises(UserError, match="cannot start with '-'"):
        location("--rsh=evil")


def test_rsync_gets_an_argument_list_with_operands_after_double_dash():
    argv = rsync_argv(location("me@host:/runs; rm -rf ~"), Path("/laptop/runs"))
    assert argv[0] == "rsync" and "-s" in argv and argv[-3:] == ["--", "me@host:/runs; rm -rf ~/", "/laptop/runs/"]
