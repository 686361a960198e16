"""``in_background``: work in a daemon thread, its result or its exception handed over by a future."""

from __future__ import annotations

import threading

import pytest

from cairn.processes import in_background


def test_the_result_and_the_exception_reach_whoever_asks() -> None:
    names: list[str] = []

    def work() -> int:
        names.append(threading.current_thread().name)
        assert threading.current_thread().daemon
        return 42

    assert in_background(work, "cairn-test").result(timeout=10) == 42
    assert names == ["cairn-test"]

    def broken() -> None:
        raise KeyboardInterrupt  # even a BaseException is handed over, not lost in the thread

    with pytest.raises(KeyboardInterrupt):
        in_background(broken, "cairn-test-broken").result(timeout=10)
