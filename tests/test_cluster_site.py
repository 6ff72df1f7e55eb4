"""Site profiles: the one place with resource names, and the job script kept equal to it."""
from pathlib import Path

import pytest

from segtrain.cluster.pbs.directives import script_request
from segtrain.cluster.site import JOB_NAME_MAX, METACENTRUM, OPENPBS, SCRIPT_SITE, Resources, get_site, job_name
from segtrain.errors import UserError

JOB_SCRIPT = Path(__file__).resolve().parents[1] / "jobs" / "train.pbs"


def test_job_script_directives_are_the_metacentrum_profile():
    request = script_request(JOB_SCRIPT)
    assert SCRIPT_SITE is METACENTRUM
    assert {k: request.resources[k] for k in ("select", "walltime")} == METACENTRUM.resource_list()


def test_job_script_name_is_short_enough_for_every_pbs():
    name = script_request(JOB_SCRIPT).name
    assert name == job_name(name) and len(name) <= JOB_NAME_MAX


def test_metacentrum_select_asks_for_gpu_scratch_and_gpu_memory():
    assert METACENTRUM.select(Resources()) == "1:ncpus=8:ngpus=1:mem=32gb:scratch_local=100gb:gpu_mem=10gb"


def test_stock_openpbs_select_uses_only_resources_every_server_defines():
    select = OPENPBS.select(Resources())
    assert select == "1:ncpus=8:mem=32gb"
    assert OPENPBS.qsub_options()[:2] == ["-l", "select=1:ncpus=8:mem=32gb"]


def test_unknown_site_is_a_user_error_listing_the_known_ones():
    with pytest.raises(UserError, match="metacentrum, openpbs"):
        get_site("lsf")


def test_site_comes_from_the_environment_when_not_named(monkeypatch):
    monkeypatch.setenv("SEGTRAIN_SITE", "openpbs")
    assert get_site() is OPENPBS


@pytest.mark.parametrize("text, name", [
    ("demo", "demo"), ("loss-dice focal", "loss-dice_focal"), ("0-weird;name", "weird_name"),
    ("a-very-long-config-name", "a-very-long"), ("tiny-e3b0c4-20261130-162826", "tiny-e3b0c4"),
    ("averyveryverylongname", "averyveryverylo"), (";;;", "segtrain"),
])
def test_job_names_are_pbs_safe(text, name):
    assert job_name(text) == name
