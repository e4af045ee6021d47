"""Freed buffers kept for reuse while tasks run (glibc)."""

import resource

import numpy as np
import pytest

from napari_unet import heap


def _faults_for_buffers(n: int = 8, megabytes: int = 64) -> int:
    """Minor page faults for allocating, filling and freeing ``n`` large buffers in turn."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        buffer = np.empty(megabytes << 20, np.uint8)
        buffer.fill(1)  # touch every page
        del buffer
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.fixture
def small_pages():
    """numpy's large buffers on 4 KiB pages for the test's duration.

    numpy asks for transparent huge pages (madvise); whether the kernel has
    them free varies from moment to moment, and a buffer on 2 MiB pages
    faults 512 times less, which made the fault counts below flaky.
    """
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core to np._core
    set_hugepage = core.multiarray._set_madvise_hugepage
    before = set_hugepage(False)
    yield
    set_hugepage(before)


@pytest.mark.skipif(heap._glibc() is None, reason="needs glibc's mallopt")
def test_buffers_are_reused_inside_a_task_and_mapped_anew_outside(small_pages):
    outside = _faults_for_buffers()
    with heap.reuse_freed_memory():
        inside = _faults_for_buffers()
    assert inside * 3 < outside
    assert _faults_for_buffers() * 3 > outside  # thresholds are back once the task ended


def test_nested_and_failing_tasks_are_counted_back_to_zero():
    assert heap.tasks_running() == 0
    with pytest.raises(RuntimeError):
        with heap.reuse_freed_memory():
            with heap.reuse_freed_memory():
                assert heap.tasks_running() == 2
                raise RuntimeError("a task failed")
    assert heap.tasks_running() == 0


def test_a_decorated_task_generator_keeps_its_events_and_result():
    @heap.reusing_freed_memory
    def task(n):
        for i in range(n):
            yield i, heap.tasks_running()
        return "done"

    gen = task(3)
    assert heap.tasks_running() == 0  # nothing runs before the first event
    events = []
    with pytest.raises(StopIteration) as end:
        while True:
            events.append(next(gen))
    assert events == [(0, 1), (1, 1), (2, 1)] and end.value.value == "done"
    assert heap.tasks_running() == 0
    stopped = task(5)
    next(stopped)
    stopped.close()  # a task stopped early (the widgets' Stop) ends its setting too
    assert heap.tasks_running() == 0
