"""What plugins share through `gateway.hookspecs` instead of copying it: the quiescence timer
(with a fake clock), Go durations, and Consul's maintenance check IDs."""

from __future__ import annotations

import pytest
from twisted.internet import task

from agent import structs
from gateway import hookspecs
from gateway.hookspecs import Quiescence, go_duration, parse_duration


def quiescence(wait_min: float, wait_max: float):
    clock, fired = task.Clock(), []
    return clock, fired, Quiescence(clock, wait_min, wait_max, lambda: fired.append(clock.seconds()))


def test_without_a_wait_a_poke_fires_at_once():
    clock, fired, timer = quiescence(0, 0)
    timer.poke()
    timer.poke()
    assert fired == [0, 0] and not timer.pending and clock.getDelayedCalls() == []


def test_fires_once_pokes_have_stopped_for_wait_min():
    clock, fired, timer = quiescence(2, 10)
    for _ in range(3):  # a burst, one second apart: each poke restarts the quiet period
        timer.poke()
        assert timer.pending
        clock.advance(1)
    assert fired == []
    clock.advance(1)  # two quiet seconds after the last poke (t=2 + 2)
    assert fired == [4] and not timer.pending
    assert clock.getDelayedCalls() == []  # the bound was dropped with it
    clock.advance(60)
    assert fired == [4]


def test_fires_by_wait_max_while_pokes_go_on_then_starts_a_new_burst():
    clock, fired, timer = quiescence(2, 5)
    for _ in range(12):  # never two quiet seconds
        timer.poke()
        clock.advance(1)
    assert fired == [5, 10]  # 5 s after each burst began (the poke at t=5 began the second)
    clock.advance(1)
    assert fired == [5, 10, 13]  # and the third (pokes at 10 and 11), once quiet


def test_wait_max_defaults_to_four_times_wait_min_and_is_never_below_it():
    assert Quiescence(task.Clock(), 3, 0, lambda: None).wait_max == 12
    assert Quiescence(task.Clock(), 3, 1, lambda: None).wait_max == 3
    clock, fired, timer = quiescence(1, 0)
    for _ in range(8):
        timer.poke()
        clock.advance(0.5)
    assert fired == [4]


def test_cancel_forgets_the_burst():
    clock, fired, timer = quiescence(1, 2)
    timer.poke()
    timer.cancel()
    assert not timer.pending and clock.getDelayedCalls() == []
    clock.advance(5)
    assert fired == []
    timer.poke()  # usable again afterwards
    clock.advance(1)
    assert fired == [6]


@pytest.mark.parametrize("text, seconds", [
    ("0", 0), ("250ms", 0.25), ("1m30s", 90), ("1.5h", 5400), (".5s", 0.5), ("2h45m15s", 9915),
    ("300us", 0.0003), ("10\u00b5s", 0.00001),
])
def test_parse_duration_reads_go_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["5 s", "5", "", "-1s", "1d", "s", "9" * 30 + "h", 5, None])
def test_parse_duration_refuses_anything_else_with_a_value_error(bad):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


def test_go_duration_writes_what_parse_duration_reads():
    for seconds, text in [(0, "0s"), (0.25, "250ms"), (90, "1m30s"), (3600, "1h0m0s"),
                          (0.0000015, "1.5\u00b5s")]:
        assert go_duration(seconds) == text
        assert parse_duration(text) == pytest.approx(seconds)


def test_maintenance_check_ids_are_consuls_and_the_cores():
    assert hookspecs.NODE_MAINT == structs.NODE_MAINT == "_node_maintenance"
    assert hookspecs.SERVICE_MAINT_PREFIX == structs.SERVICE_MAINT_PREFIX
    assert hookspecs.SERVICE_MAINT_PREFIX == "_service_maintenance:"
