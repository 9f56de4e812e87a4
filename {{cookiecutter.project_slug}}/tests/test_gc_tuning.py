import gc
import weakref
from collections.abc import Iterator

import pytest

from {{ cookiecutter.project_slug }}.gc_tuning import FULL_COLLECTION_EVERY, settle_after_startup


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def _generational() -> bool:
    """Whether this interpreter has full collections to space out (3.14's may not)."""
    gc.set_threshold(700, 10, 10)
    return gc.get_threshold()[2] != 0


def test_startup_objects_are_frozen_and_full_collections_spaced_out(restored_gc: None):
    gc.unfreeze()
    generational = _generational()
    kept = [[n] for n in range(1000)]  # objects alive at start-up, like the app's own
    settle_after_startup()
    assert gc.get_freeze_count() >= len(kept)
    young, middle, old = gc.get_threshold()
    assert (young, middle) == (700, 10)  # the young generations are collected as before
    assert old == (FULL_COLLECTION_EVERY if generational else 0)


def test_a_higher_setting_is_kept(restored_gc: None):
    generational = _generational()
    gc.set_threshold(700, 10, 500)
    settle_after_startup()
    assert gc.get_threshold()[2] == (500 if generational else 0)


def test_start_up_garbage_is_collected_not_frozen(restored_gc: None):
    class Node:
        pass

    cycle = Node()
    cycle.self = cycle  # type: ignore[attr-defined]
    probe = weakref.ref(cycle)
    del cycle  # unreachable, but only the collector can free a cycle
    gc.disable()  # no collection on its own before the call
    try:
        settle_after_startup()
    finally:
        gc.enable()
    assert probe() is None


def test_the_app_settles_the_collector_when_it_starts(serve, restored_gc: None):
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    serve()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[2] in (0, FULL_COLLECTION_EVERY)
