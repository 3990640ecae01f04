"""stoke.diagnosis.measure.in_graph_steps: where the stretch of steps with Keras' own pull runs,
how each is timed and synced, and what it charges the probes (no Keras: a stand-in step)."""

from __future__ import annotations

import time

from stoke.diagnosis.measure import in_graph_steps
from stoke.diagnosis.measure.in_graph_steps import InGraphSteps
from stoke.diagnosis.measure.step_clock import StepClock


def test_it_starts_inside_an_epoch_in_the_last_third_before_the_probe_step():
    def due(stretch=None, **changes):
        asked = {"to_probe": 12, "fit_steps_to_probe": 50, "steps_in_epoch": 5,
                 "left_in_epoch": 20, "held_back": lambda: None, **changes}
        return (stretch or InGraphSteps()).due(**asked)

    assert due()
    assert not due(fit_steps_to_probe=30)  # 12 steps are more than a third of 30
    assert not due(to_probe=5)  # too few left for the warm-up and the least timed steps
    assert not due(steps_in_epoch=0)  # an epoch's first step
    assert not due(left_in_epoch=6)  # it would reach the epoch's last step
    assert not due(left_in_epoch=None)  # an epoch of unknown length
    asked = []
    assert not due(held_back=lambda: asked.append(1) or "busy") and asked == [1]
    # once started, it goes on to the step before the probe step, or to the epoch's end
    stretch = InGraphSteps()
    clock = StepClock(time.perf_counter(), [], warmup_steps=0)
    clock.restart()
    stretch.run_step(lambda iterator: None, None, lambda result: None, clock)
    assert stretch.started
    assert due(stretch, to_probe=1, left_in_epoch=2, held_back=lambda: "busy")
    assert not due(stretch, to_probe=1, left_in_epoch=1) and stretch.done
    assert not due(stretch)  # ended: never again


def test_where_it_does_not_start_it_keeps_the_last_reason_and_records_it():
    def skipped(**changes):
        stretch = InGraphSteps()
        asked = {"to_probe": 12, "fit_steps_to_probe": 50, "steps_in_epoch": 5,
                 "left_in_epoch": 20, "held_back": lambda: None, **changes}
        assert not stretch.due(**asked)
        return stretch.facts()["tf_in_graph_skipped"]

    assert "length is not known" in skipped(left_in_epoch=None)
    assert "epochs are 7 steps long" in skipped(steps_in_epoch=2, left_in_epoch=5)
    # room for 10 before a probe step 30 steps in: 12 ahead is not yet a reason, and where the
    # run ended there, that is the reason
    assert skipped(fit_steps_to_probe=30) == "the run or its fit ended before the probes' step"
    assert "15 steps into the fit, too early" in skipped(fit_steps_to_probe=15)
    assert "9 steps into the fit, too early" in skipped(to_probe=5, fit_steps_to_probe=9)
    assert "first or last step" in skipped(steps_in_epoch=0)
    assert "an epoch's end fell within the 6 steps" in skipped(left_in_epoch=6)
    assert skipped(held_back=lambda: "the caller's reason") == "the caller's reason"
    # the last reason stands; skip() (the caller's, before asking) never overwrites one
    stretch = InGraphSteps()
    stretch.due(12, 50, 5, None, lambda: None)
    stretch.skip("asked too late")
    assert "length is not known" in stretch.skipped
    assert not stretch.due(4, 50, 9, 20, lambda: None)  # past the window: the reason stands
    assert "length is not known" in stretch.facts()["tf_in_graph_skipped"]
    fresh = InGraphSteps()
    fresh.skip("the probes came early")
    assert fresh.facts() == {"tf_in_graph_skipped": "the probes came early"}
    assert fresh.due(12, 50, 5, 20, lambda: None) and fresh.skipped is None  # it starts
    # the run ended while the probes were still far ahead (a user's Ctrl-C at step 15 of a
    # run probed at step 50): said so, not left unexplained; nearer, the real reason wins
    far = InGraphSteps()
    assert not far.due(34, 50, 3, 3, lambda: None)
    assert far.facts() == {"tf_in_graph_skipped": "the run or its fit ended before the probes' step"}
    far.skip("the doctor's probes were off")
    assert far.skipped == "the doctor's probes were off"
    # started, but the fit ended in its untimed first steps: it ran, and timed nothing
    clock = StepClock(time.perf_counter(), [], warmup_steps=0)
    clock.restart()
    fresh.run_step(lambda iterator: None, None, lambda result: None, clock)
    fresh.end()
    assert fresh.facts() == {
        "tf_in_graph_skipped": "the fit ended during their first, untimed steps"}


def test_the_steps_are_counted_not_recorded_and_synced_after_the_warmup_and_at_the_end(
        monkeypatch):
    monkeypatch.setattr(in_graph_steps, "STEPS", 5)
    steps = []
    clock = StepClock(time.perf_counter(), steps, warmup_steps=0)
    clock.restart()
    stretch, synced, calls = InGraphSteps(), [], []

    def train_function(iterator):
        calls.append(iterator)
        time.sleep(0.002)
        return len(calls)

    while not stretch.done:
        stretch.run_step(train_function, "the run's iterator", synced.append, clock)
    assert calls == ["the run's iterator"] * (in_graph_steps.WARMUP_STEPS + 5)
    assert synced == [2, 7]  # the last untimed step's result, the last timed one's
    assert len(stretch.step_s) == 5 and all(s >= 0.002 for s in stretch.step_s)
    assert steps == [] and clock.steps_seen == 7  # counted, not recorded
    assert stretch.facts() == {"tf_in_graph_step_s": stretch.step_s}
    charge = stretch.take_trace_charge()
    assert charge is not None and charge >= 0.0
    assert stretch.take_trace_charge() is None  # charged once


def test_a_stretch_that_never_timed_a_step_records_nothing():
    stretch = InGraphSteps()
    assert stretch.facts() == {} and stretch.take_trace_charge() is None  # not started
