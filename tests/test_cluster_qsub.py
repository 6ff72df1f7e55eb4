"""qsub argument lists and job variables that survive qsub's -v parsing."""
import pytest
from hypothesis import given, strategies as st

from segtrain.cluster.pbs.directives import parse_qsub_args
from segtrain.cluster.pbs.qsub import job_argv, qsub_argv, run_qsub, variable_list
from segtrain.cluster.variables import decode_value, encode_value, join_overrides, split_overrides
from segtrain.errors import UserError

TRICKY = ["data.bands=[0, 1, 3]", "run.name=it's \"quoted\"", "x=a;b", "p=50%", "c=a\\b", "n=line\nbreak", "u=ü"]


def test_plain_values_are_sent_as_typed_by_hand():
    assert encode_value("configs/my.yaml") == "configs/my.yaml"
    assert encode_value("train.epochs=5 optim.lr=1e-3") == "train.epochs=5 optim.lr=1e-3"


def test_values_qsub_would_cut_or_change_are_encoded_without_commas_quotes_or_backslashes():
    for value in TRICKY:
        encoded = encode_value(value)
        assert not set(encoded) & set(",'\"\\\n")
        assert decode_value(encoded) == value


@given(st.text())
def test_encoding_round_trips_any_text(value):
    assert decode_value(encode_value(value)) == value


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))))
def test_overrides_split_back_into_exactly_the_words_given(words):
    assert split_overrides(join_overrides(words)) == words


def test_variable_list_reaches_the_job_intact_through_qsub_parsing():
    variables = {"CONFIG": "configs/demo.yaml", "OVERRIDES": join_overrides(TRICKY)}
    request = parse_qsub_args(["-v", variable_list(variables), "jobs/train.pbs"], environ={})
    assert {k: decode_value(v) for k, v in request.variables.items()} == variables


def test_qsub_argv_is_a_word_list_with_the_script_last():
    argv = qsub_argv("jobs/train.pbs", {"RUN": "/storage/runs/a", "EMPTY": ""}, name="demo",
                     resources={"walltime": "01:00:00"}, depend="afterany:12.server")
    assert argv == ["qsub", "-N", "demo", "-l", "walltime=01:00:00", "-W", "depend=afterany:12.server",
                    "-v", "RUN=/storage/runs/a", "jobs/train.pbs"]


def test_job_argv_names_the_job_after_the_config_and_carries_overrides():
    argv = job_argv("configs/loss-dice.yaml", ["train.epochs=3"], max_resubmits=2)
    request = parse_qsub_args(argv[1:], environ={})
    assert request.name == "loss-dice"
    assert request.variables == {"CONFIG": "configs/loss-dice.yaml", "OVERRIDES": "train.epochs=3", "MAX_RESUBMITS": "2"}


def fake_qsub(tmp_path, body: str) -> str:
    """A stand-in for the real qsub (not installed here): prints or fails as the body says."""
    path = tmp_path / "qsub"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_run_qsub_returns_the_new_job_id_and_gives_qsub_no_stdin(tmp_path):
    qsub = fake_qsub(tmp_path, 'read line && echo "stdin was open" >&2 && exit 1\necho "  42.pbs-m1  "\n')
    assert run_qsub([qsub, "jobs/train.pbs"]) == "42.pbs-m1"


def test_run_qsub_failure_is_one_line_with_qsubs_own_message(tmp_path):
    qsub = fake_qsub(tmp_path, 'echo "qsub: Unknown resource Resource_List.ngpus" >&2\nexit 38\n')
    with pytest.raises(UserError, match=r"qsub failed \(exit 38\): qsub: Unknown resource Resource_List.ngpus"):
        run_qsub([qsub, "jobs/train.pbs"])


def test_run_qsub_gives_up_on_a_hanging_qsub_and_suggests_kinit(tmp_path):
    qsub = fake_qsub(tmp_path, "exec sleep 30\n")
    with pytest.raises(UserError, match="kinit"):
        run_qsub([qsub, "jobs/train.pbs"], timeout_s=0.5)


def test_run_qsub_without_qsub_suggests_the_local_mode(tmp_path):
    with pytest.raises(UserError, match="--local"):
        run_qsub([str(tmp_path / "no-qsub"), "jobs/train.pbs"])
