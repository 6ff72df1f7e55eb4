"""qsub options from command lines and #PBS directives, parsed the way qsub reads them."""
from pathlib import Path

import pytest

from segtrain.cluster.pbs.directives import job_request, parse_qsub_args
from segtrain.cluster.scheduler import read_directives
from segtrain.errors import UserError

SCRIPT = """#!/bin/bash
# a comment before the directives
#PBS -N train
#PBS -l select=1:ncpus=8:mem=32gb
#PBS -l walltime=24:00:00
#PBS -j oe

echo start
#PBS -l walltime=99:00:00
"""


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "job.pbs"
    path.write_text(SCRIPT)
    return path


def test_directives_stop_at_the_first_executable_line(script):
    words = read_directives(script, "#PBS")
    assert words == ["-N", "train", "-l", "select=1:ncpus=8:mem=32gb", "-l", "walltime=24:00:00", "-j", "oe"]


def test_command_line_options_win_over_directives_resource_by_resource(script):
    request = job_request(["-l", "walltime=01:00:00", "-N", "other", str(script)], environ={})
    assert request.name == "other"
    assert request.resources == {"select": "1:ncpus=8:mem=32gb", "walltime": "01:00:00"}
    assert request.join == "oe"
    assert request.script == script


def test_options_accept_getopt_forms_and_comma_separated_resources():
    request = parse_qsub_args(["-Nname", "-l", "walltime=1:00:00,mem=4gb", "-W", "depend=afterany:12.server", "x.sh"])
    assert request.name == "name"
    assert request.resources == {"walltime": "1:00:00", "mem": "4gb"}
    assert request.attributes == {"depend": "afterany:12.server"}


def test_variable_list_splits_at_commas_and_takes_bare_names_from_the_environment():
    request = parse_qsub_args(["-v", "A=1,B=x y=z,HOME", "job.sh"], environ={"HOME": "/home/u"})
    assert request.variables == {"A": "1", "B": "x y=z", "HOME": "/home/u"}


def test_variable_list_refuses_quotes_whose_meaning_differs_between_qsub_versions():
    with pytest.raises(UserError, match="quotes"):
        parse_qsub_args(["-v", "A='1,2'", "job.sh"], environ={})


def test_unknown_options_and_missing_values_are_errors():
    with pytest.raises(UserError, match="-Z"):
        parse_qsub_args(["-Z", "job.sh"])
    with pytest.raises(UserError, match="needs a value"):
        parse_qsub_args(["-N"])
