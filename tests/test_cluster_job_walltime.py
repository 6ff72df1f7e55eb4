"""PBS durations and the trainer's time limit."""
import pytest

from segtrain.cluster.walltime import format_hms, parse_hms
from segtrain.cluster.walltime import MAX_MARGIN_S, MIN_LIMIT_S, MIN_MARGIN_S, default_margin, training_time_limit
from segtrain.errors import UserError


@pytest.mark.parametrize("text, seconds", [
    ("24:00:00", 86400), ("336:00:00", 336 * 3600), ("1:30:15", 5415), ("05:00", 300), ("90", 90), ("0:00:01.5", 1.5),
])
def test_parse_duration_reads_every_pbs_form(text, seconds):
    assert parse_hms(text) == seconds


@pytest.mark.parametrize("text", ["", "1d", "1:2:3:4", "00:61:00", "00:00:75", "-5", "ten"])
def test_parse_duration_refuses_what_pbs_would_not_accept_naming_the_value(text):
    with pytest.raises(UserError, match="walltime"):
        parse_hms(text)


def test_format_duration_round_trips_through_parse():
    for seconds in (0, 59, 3600, 86399, 336 * 3600):
        assert parse_hms(format_hms(seconds)) == seconds


def test_margin_is_five_percent_within_one_and_ten_minutes():
    assert default_margin(3600) == 180
    assert default_margin(2 * 3600) == 360
    assert default_margin(336 * 3600) == MAX_MARGIN_S
    assert default_margin(300) == MIN_MARGIN_S


def test_time_limit_subtracts_elapsed_time_and_margin():
    assert training_time_limit(3600, elapsed_s=100, margin_s=300) == 3200


def test_time_limit_never_drops_below_one_step_so_chains_progress():
    assert training_time_limit(600, elapsed_s=700, margin_s=60) == MIN_LIMIT_S
