"""Progress events and the generator driver."""

import pytest

from napari_unet.progress import Progress, Stage, TimeLeft, minutes_seconds, run_to_end


def test_run_to_end_returns_the_result_and_passes_every_event():
    def work():
        for i in range(3):
            yield Progress(Stage.PREDICT, i + 1, 3)
        return "done"

    seen = []
    assert run_to_end(work(), seen.append) == "done"
    assert [e.step for e in seen] == [1, 2, 3]
    assert seen[-1].fraction == 1.0
    assert Progress(Stage.TRAIN, 5, None).fraction is None
    assert Progress(Stage.TRAIN, 5, 2).fraction == 1.0  # never above 1


def test_a_stage_given_by_name_becomes_the_member_and_still_reads_as_text():
    event = Progress("validate", 1, 2)
    assert event.stage is Stage.VALIDATE
    assert event.stage == "validate"


def test_an_unknown_stage_fails_where_the_event_is_made():
    with pytest.raises(ValueError):
        Progress("trian", 1, 2)


def test_minutes_seconds_reads_as_a_clock():
    assert minutes_seconds(0) == "0:00"
    assert minutes_seconds(65.4) == "1:05"
    assert minutes_seconds(3725) == "1:02:05"
    assert minutes_seconds(-3) == "0:00"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_time_left_follows_the_pace_of_the_current_phase():
    clock = FakeClock()
    left = TimeLeft(clock)
    assert left.update(Progress(Stage.PREPARE, 0)) is None  # no total: no estimate
    assert left.update(Progress(Stage.PREDICT, 0, 10)) is None  # the phase begins
    clock.now += 4.0
    assert left.update(Progress(Stage.PREDICT, 2, 10)) == pytest.approx(16.0)  # 2 s a tile
    clock.now += 1.0
    assert left.update(Progress(Stage.PREDICT, 5, 10)) == pytest.approx(5.0)  # 1 s a tile
    # A new total (the next plane, another stage) starts a new phase: no stale pace.
    clock.now += 60.0
    assert left.update(Progress(Stage.PREDICT, 1, 4)) is None
    clock.now += 3.0
    assert left.update(Progress(Stage.PREDICT, 2, 4)) == pytest.approx(6.0)


def test_time_left_takes_an_events_own_estimate():
    left = TimeLeft(FakeClock())
    assert left.update(Progress(Stage.TRAIN, 3, 100, {"eta_s": 42.0})) == 42.0
    assert left.update(Progress(Stage.TRAIN, 4, 100, {"eta_s": -1.0})) == 0.0
