"""The job environment, qstat -f parsing and the walltime lookup."""

import pytest

from segtrain.cluster.pbs.environment import job_attributes, job_environment, job_walltime, parse_qstat_full, require_job
from segtrain.errors import UserError

QSTAT_F = """Job Id: 12345.pbs-m1.metacentrum.cz
    Job_Name = segtrain
    job_state = R
    Resource_List.select = 1:ncpus=8:ngpus=1:mem=32gb:scratch_local=100gb:gpu_m
\tem=10gb
    Resource_List.walltime = 02:00:00
    Variable_List = PBS_O_HOME=/home/u,PBS_O_WORKDIR=/storage/brno2/home/u/segtra
\tin,CONFIG=configs/demo.yaml

"""


def test_job_environment_reads_stock_openpbs_variables(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("node1\nnode1\nnode2\n")
    env = job_environment({
        "PBS_JOBID": "13[2].server", "PBS_JOBNAME": "train", "PBS_O_WORKDIR": "/w", "PBS_NODEFILE": str(nodefile),
        "NCPUS": "8", "TMPDIR": "/var/tmp/pbs.13[2].server", "PBS_ARRAY_INDEX": "2", "PBS_ARRAY_ID": "13[].server",
        "PBS_ENVIRONMENT": "PBS_BATCH",
    })
    assert env.job_id == "13[2].server" and env.array_index == 2 and env.job_name == "train"
    assert [node.host for node in env.nodes()] == ["node1", "node2"]


def test_outside_a_job_everything_is_unset_and_require_job_says_how_to_run():
    env = job_environment({"TMPDIR": "/tmp"})
    assert env.job_id is None and env.workdir is None
    with pytest.raises(UserError, match="scripts/submit CONFIG --local"):
        require_job(env)


def test_qstat_full_output_rejoins_wrapped_values():
    attrs = parse_qstat_full(QSTAT_F)["12345.pbs-m1.metacentrum.cz"]
    assert attrs["Resource_List.select"].endswith("scratch_local=100gb:gpu_mem=10gb")
    assert attrs["Variable_List"].endswith("PBS_O_WORKDIR=/storage/brno2/home/u/segtrain,CONFIG=configs/demo.yaml")


def test_job_attributes_fall_back_to_the_only_job_listed():
    assert job_attributes(QSTAT_F, "12345")["Job_Name"] == "segtrain"


def test_walltime_comes_from_qstat_before_the_script(tmp_path):
    script = tmp_path / "job.pbs"
    script.write_text("#PBS -l walltime=24:00:00\necho\n")
    assert job_walltime(QSTAT_F, "12345.pbs-m1.metacentrum.cz", [script]) == (7200, "qstat -f")


def test_walltime_falls_back_to_the_first_readable_script_directive(tmp_path):
    script = tmp_path / "job.pbs"
    script.write_text("#PBS -l walltime=24:00:00\necho\n")
    seconds, source = job_walltime("qstat: Unknown Job Id 1.s\n", "1.s", [tmp_path / "missing.SC", script])
    assert seconds == 86400 and str(script) in source


def test_no_walltime_anywhere_is_reported_not_guessed(tmp_path):
    assert job_walltime(None, "1.s", [tmp_path / "missing"])[0] is None
