"""Progress events and the generator driver."""

from napari_unet.progress import Progress, run_to_end


def test_run_to_end_returns_the_result_and_passes_every_event():
    def work():
        for i in range(3):
            yield Progress("step", i + 1, 3)
        return "done"

    seen = []
    assert run_to_end(work(), seen.append) == "done"
    assert [e.step for e in seen] == [1, 2, 3]
    assert seen[-1].fraction == 1.0
    assert Progress("x", 5, None).fraction is None
    assert Progress("x", 5, 2).fraction == 1.0  # never above 1
