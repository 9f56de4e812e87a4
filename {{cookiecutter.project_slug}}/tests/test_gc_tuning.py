import gc
from collections.abc import Iterator

import pytest

from {{ cookiecutter.project_slug }}.gc_tuning import FULL_COLLECTION_EVERY, settle_after_startup


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_startup_objects_are_frozen_and_full_collections_spaced_out(restored_gc: None):
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    kept = [[n] for n in range(1000)]  # objects alive at start-up, like the app's own
    settle_after_startup()
    assert gc.get_freeze_count() >= len(kept)
    young, middle, old = gc.get_threshold()
    assert (young, middle) == (700, 10)  # the young generations are collected as before
    assert old in (0, FULL_COLLECTION_EVERY)  # 0: an incremental collector ignores it


def test_a_higher_setting_is_kept(restored_gc: None):
    gc.set_threshold(700, 10, 500)
    settle_after_startup()
    assert gc.get_threshold()[2] in (0, 500)


def test_frozen_objects_are_still_freed_when_unreferenced(restored_gc: None):
    class Probe:
        freed = False

        def __del__(self) -> None:
            Probe.freed = True

    probe = Probe()
    settle_after_startup()
    del probe  # reference counting frees it; the collector is not needed
    assert Probe.freed
