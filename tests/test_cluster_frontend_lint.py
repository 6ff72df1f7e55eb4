"""Lint of a submission: the mistakes that cost a day in the queue, caught before qsub."""
from pathlib import Path

import pytest

from segtrain.cluster.frontend.lint import ERROR, WARNING, raise_errors
from segtrain.cluster.pbs.lint import lint_request, lint_script
from segtrain.cluster.pbs.directives import parse_qsub_args, script_request
from segtrain.cluster.site import METACENTRUM, OPENPBS
from segtrain.errors import UserError

REPO = Path(__file__).resolve().parents[1]
GOOD = "select=1:ncpus=8:ngpus=1:mem=32gb:scratch_local=100gb:gpu_mem=10gb"


def findings(*args: str, site=METACENTRUM):
    return lint_request(parse_qsub_args([*args, "job.pbs"], environ={}), site)


def errors(*args: str, site=METACENTRUM) -> list[str]:
    return [f.message for f in findings(*args, site=site) if f.level == ERROR]


def test_the_shipped_job_script_and_its_directives_are_clean():
    script = REPO / "jobs" / "train.pbs"
    assert lint_script(script) == [] and lint_request(script_request(script), METACENTRUM) == []


def test_crlf_line_endings_are_an_error_naming_the_first_line(tmp_path):
    script = tmp_path / "job.pbs"
    script.write_bytes(b"#!/bin/bash\n#PBS -N x\r\necho\r\n")
    [finding] = lint_script(script)
    assert finding.level == ERROR and finding.where == f"{script}:2" and "dos2unix" in finding.message


def test_obsolete_gpu_cap_form_is_an_error_with_the_current_form():
    [message] = errors("-l", GOOD + ":gpu_cap=cuda75")
    assert "write gpu_cap=compute_75" in message
    assert errors("-l", GOOD + ":gpu_cap=compute_75") == []


def test_a_metacentrum_job_without_scratch_is_an_error():
    [message] = errors("-l", "select=1:ncpus=8:ngpus=1:mem=32gb")
    assert "no scratch resource" in message and "$SCRATCHDIR" in message
    assert errors("-l", "select=1:ncpus=8:ngpus=1:mem=32gb:scratch_ssd=50gb") == []


@pytest.mark.parametrize("walltime, queue, ok", [
    ("24:00:00", None, True), ("100:00:00", None, True), ("336:00:00", None, True), ("337:00:00", None, False),
    ("24:00:00", "gpu", True), ("25:00:00", "gpu", False), ("300:00:00", "gpu_long", True),
    ("999:00:00", "someones_own_queue", True),
])
def test_walltime_over_the_queues_maximum_is_an_error(walltime, queue, ok):
    args = ["-l", GOOD, "-l", f"walltime={walltime}"] + (["-q", queue] if queue else [])
    assert (errors(*args) == []) == ok


def test_more_gpus_in_a_chunk_than_a_node_has_is_an_error():
    assert errors("-l", GOOD.replace("ngpus=1", "ngpus=8")) == []
    [message] = errors("-l", GOOD.replace("ngpus=1", "ngpus=16"))
    assert "ngpus=16" in message and "8 GPUs" in message


def test_a_typo_of_a_resource_name_is_an_error_an_unknown_name_a_warning():
    [typo] = errors("-l", GOOD.replace("ngpus", "ngpu"))
    assert "did you mean 'ngpus'" in typo
    [other] = findings("-l", GOOD + ":brand_new_thing=1")
    assert other.level == WARNING and "brand_new_thing" in other.message
    assert findings("-l", GOOD + ":cl_galdor=True") == []


def test_resources_a_stock_openpbs_server_refuses_are_reported():
    [message] = errors("-l", "select=1:ncpus=8:ngpus=1:mem=32gb", site=OPENPBS)
    assert "unknown resource 'ngpus' on openpbs" in message and "--site metacentrum" in message
    assert errors("-l", "select=1:ncpus=8:mem=32gb", site=OPENPBS) == []


def test_errors_refuse_in_one_line_with_every_error_counted():
    with pytest.raises(UserError, match=r"^lint: .*ngpus=16.* \(and 1 more: .*walltime") as exc:
        raise_errors(findings("-l", GOOD.replace("ngpus=1", "ngpus=16"), "-l", "walltime=400:00:00"))
    assert "\n" not in str(exc.value)
