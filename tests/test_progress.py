"""Progress events and the generator driver."""

import pytest

from napari_unet.progress import Progress, Stage, run_to_end


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
