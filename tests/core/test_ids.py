import time

from core import ids


def test_ids_are_prefixed_and_long_enough():
    value = ids.new_id("deployment")
    assert value.startswith("depl_")
    assert len(value) == len("depl_") + 26


def test_ids_sort_by_time():
    first = ids.new_id("deployment_run")
    time.sleep(0.002)
    second = ids.new_id("deployment_run")
    assert first < second


def test_ids_do_not_repeat():
    values = {ids.new_id("session") for _ in range(10000)}
    assert len(values) == 10000


def test_ulid_encodes_the_timestamp():
    value = ids.ulid(timestamp_ms=0)
    assert value.startswith("0000000000")
