"""The input-free window without Keras, on a virtual clock: what it adds to its back-to-back
calls for the fit loop and the hand-over, which the run's own steps only show right after
their waits (issue 14: a JAX tiny model predicted x36.6 where its fixed twin ran x87)."""

from __future__ import annotations

import pytest

from stoke.diagnosis.measure import input_free, step_clock
from stoke.diagnosis.measure.facts import batch_end_async
from stoke.diagnosis.measure.input_free import InputFreeWindow
from stoke.diagnosis.measure.step_clock import StepClock


class VirtualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    virtual = VirtualClock()
    monkeypatch.setattr(input_free, "_perf_counter", virtual)
    monkeypatch.setattr(step_clock, "_perf_counter", virtual)
    # torch and TensorFlow snapshot the model's variables: none here
    monkeypatch.setattr(input_free, "snapshot_variables", lambda model: lambda: None)
    return virtual


def run_window(clock: VirtualClock, call_s: float, **window_args) -> dict:
    """A window of 12 calls of ``call_s`` each; its result's detail."""
    window = InputFreeWindow("torch", object(), None, batch=("x", "y"), batch_size=32,
                             planned=12, **window_args)

    def original(*args):
        clock.sleep(call_s)
        return "logs"

    while True:
        _result, finished = window.call(original, lambda result: None, ())
        if finished:
            break
    return window.result.detail


def test_the_fit_loop_speeds_up_back_to_back_by_a_power_of_the_train_functions_ratio(clock):
    # the run's steps: the train function 0.40 ms, the loop 0.40 ms, both right after a wait;
    # back to back the train function takes 0.05 ms (8x faster): the loop is 8^0.7 = 4.3x
    # faster, 0.093 ms (benchmarks/after_wait_slowdown.py, JAX, session 11: the loop 2.7-3.1x
    # where the train function was 4.2-4.6x; scaled 8x the loop came out 2-3x short)
    detail = run_window(clock, 0.00005, loop_s=0.0004, call_s_after_wait=0.0004)
    assert detail["call_s_per_step"] == pytest.approx(0.00005)
    assert detail["call_s_after_wait"] == pytest.approx(0.0004)
    assert detail["warm_share"] == pytest.approx(0.125)
    assert detail["loop_share"] == pytest.approx(0.125 ** 0.7)
    assert detail["loop_s_after_wait"] == pytest.approx(0.0004)
    assert detail["loop_s_per_step"] == pytest.approx(0.0004 * 0.125 ** 0.7)  # 0.093 ms
    # was 0.45 ms (the loop as timed), then 0.10 ms (the loop at the train function's share)
    assert detail["s_per_step"] == pytest.approx(0.00005 + 0.0004 * 0.125 ** 0.7)


def test_the_loop_keeps_its_after_wait_time_where_the_share_is_not_applied(clock):
    # torch, TensorFlow: the share is recorded, the loop stays as the steps timed it
    detail = run_window(clock, 0.00005, loop_s=0.0004, call_s_after_wait=0.0004, scale_loop=False)
    assert detail["warm_share"] == pytest.approx(0.125) and detail["loop_scaled"] is False
    assert detail["loop_share"] == 1.0
    assert detail["s_per_step"] == pytest.approx(0.00045)


def test_the_pull_of_a_ready_batch_is_charged_once(clock):
    # TensorFlow, the doctor pulling each batch itself: its steps' loop (step less wait less
    # the train function) holds the pull's floor, which the window charges its calls (no
    # pull); counted twice, custom_train_step.py came out x15.9 against x29-34 (issue 14)
    detail = run_window(clock, 0.0015, loop_s=0.0005, ready_pull_s=0.00035, scale_loop=False)
    assert detail["loop_s_per_step"] == pytest.approx(0.00015)
    assert detail["s_per_step"] == pytest.approx(0.0015 + 0.00035 + 0.00015)
    # a loop shorter than the floor (a pull faster than the floor: no wait) adds nothing
    detail = run_window(clock, 0.0015, loop_s=0.0002, ready_pull_s=0.00035, scale_loop=False)
    assert detail["s_per_step"] == pytest.approx(0.0015 + 0.00035)


def test_a_window_slower_than_the_steps_makes_the_loop_no_slower(clock):
    # the window ran under heavier load than the steps: the loop stays as the steps timed it
    detail = run_window(clock, 0.0005, loop_s=0.0004, call_s_after_wait=0.0002)
    assert detail["warm_share"] == 1.0
    assert detail["s_per_step"] == pytest.approx(0.0009)
    # the steps' train function not timed (a record of a train_on_batch loop): as before
    assert run_window(clock, 0.0005, loop_s=0.0004)["s_per_step"] == pytest.approx(0.0009)


def test_the_handover_is_timed_at_the_windows_end_on_its_batch(clock):
    given = []

    def handover(batch):
        given.append(batch)
        clock.sleep(0.01)  # its own pulls: not in the window's calls
        return 0.00001

    detail = run_window(clock, 0.00005, loop_s=0.0, handover=handover)
    assert given == [("x", "y")]
    assert detail["handover_s"] == 0.00001
    assert detail["s_per_step"] == pytest.approx(0.00005)

    def broken(batch):
        raise RuntimeError("no adapter")

    detail = run_window(clock, 0.00005, loop_s=0.0, handover=broken)
    assert "handover_s" not in detail and "no adapter" in detail["handover_error"]
    assert detail["s_per_step"] == pytest.approx(0.00005)


def test_the_step_clock_keeps_the_train_functions_time_on_steady_steps(clock):
    steps = []
    clock_ = StepClock(clock(), steps, warmup_steps=1)
    clock_.begin_loop()
    clock_.restart()
    for call_s in (0.5, 0.003, 0.001, 0.002):  # the first is warm-up (compilation)
        clock.sleep(0.02)
        clock_.note_batch(wait_s=0.015, samples=32)
        clock_.end_step(clock(), synced=False, sync_s=0.0, call_s=call_s)
    assert clock_.call_s_median() == pytest.approx(0.002)
    assert StepClock(clock(), []).call_s_median() == 0.0


class Logs:
    """A log value that notes the thread that turns it into a Python number."""

    def __init__(self, threads: list) -> None:
        self.threads = threads

    def __float__(self) -> float:
        import threading

        self.threads.append(threading.get_ident())
        return 0.5


def test_the_window_hands_each_calls_logs_to_a_thread_pool_where_fit_does(clock):
    # fit with no per-batch callback hands every step's logs to Keras' thread pool (JAX,
    # torch): the fixed twin pays that pool beside each step, so the window's calls do too
    import threading

    threads: list[int] = []
    before = threading.active_count()
    for pooled in (True, False):
        threads.clear()
        window = InputFreeWindow("torch", object(), None, batch=("x", "y"), batch_size=32,
                                 planned=12, batch_end_async=pooled, loop_s=0.0002)

        def original(*args):
            clock.sleep(0.0001)
            return {"loss": Logs(threads)}

        while not window.call(original, lambda result: None, ())[1]:
            pass
        detail = window.result.detail
        assert detail["batch_end_async"] is pooled
        if pooled:  # the second half's calls' logs, all converted by the window's end; the
            # first half times the train function alone (the warm share's figure)
            assert len(threads) == 12 - (input_free.WARMUP_CALLS + (12 - input_free.WARMUP_CALLS) // 2)
            assert detail["call_s_per_step"] == pytest.approx(0.0001)
            assert detail["pooled_call_s_per_step"] == pytest.approx(0.0001)
            # off this thread where Keras' CallbackList pools batch-ends on this backend (as
            # fit's does; on TensorFlow it never does, and no run records batch_end_async)
            assert (threading.get_ident() not in threads) is batch_end_async([])
        else:
            assert threads == [] and detail["pooled_call_s_per_step"] is None
    # the pool's threads are gone with the window
    assert threading.active_count() == before
