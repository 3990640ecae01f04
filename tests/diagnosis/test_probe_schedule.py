"""The probe schedule without Keras: one plan and one budget for every probe, fed by a real
step clock and probes that take time on a virtual clock (the schedule's ``_perf_counter``):
a sleep on a loaded machine overshoots by tens of milliseconds, which made "the probes stayed
within their 0.5 s budget" fail now and then; on the virtual clock a probe takes exactly the
time it says, so the budget checks are exact."""

from __future__ import annotations

import pytest

from stoke.diagnosis.measure import probe_schedule, step_clock
from stoke.diagnosis.measure.probe_schedule import Probe, ProbeBudget, ProbeNotRun, ProbeSchedule
from stoke.diagnosis.measure.step_clock import StepClock
from stoke.diagnosis.record import Measurements, ProbeResult


class VirtualClock:
    """``perf_counter`` for the schedule and the step clock: time moves only by :meth:`sleep`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


CLOCK = VirtualClock()


@pytest.fixture(autouse=True)
def virtual_time(monkeypatch):
    monkeypatch.setattr(CLOCK, "now", 1000.0)
    monkeypatch.setattr(probe_schedule, "_perf_counter", CLOCK)
    monkeypatch.setattr(step_clock, "_perf_counter", CLOCK)


def run_with_steps(step_s: float, steps: int, **schedule_args) -> tuple[ProbeSchedule, Measurements]:
    record = Measurements()
    started = CLOCK()
    clock = StepClock(started, record.steps, warmup_steps=0)
    clock.begin_call_loop()
    clock.start_if_idle(started)
    for number in range(steps):
        step_by_step(clock, started + (number + 1) * step_s)
    return ProbeSchedule(record, clock, **schedule_args), record


def step_by_step(clock: StepClock, t_end: float) -> None:
    clock.note_batch(wait_s=0.0, samples=32)
    clock.end_step(t_end, synced=False, sync_s=0.0)


def sleeping_probe(name: str, step_s: float, fixed_steps: int = 2) -> tuple[Probe, list[float]]:
    """A probe that works like the model-alone one: warm-up steps, then steps until its
    seconds or its deadline; it keeps the seconds it was given."""
    given: list[float] = []

    def run(seconds: float, deadline: float) -> ProbeResult:
        given.append(seconds)
        CLOCK.sleep(fixed_steps * step_s)
        started = CLOCK()
        steps = 0
        while CLOCK() - started < seconds and CLOCK() + step_s <= deadline:
            CLOCK.sleep(step_s)
            steps += 1
        return ProbeResult(samples_per_s=1.0, seconds=CLOCK() - started, batches=steps)

    return Probe(name, name, run, fixed_s=fixed_steps * step_s, unit_s=step_s), given


def test_budget_is_a_share_of_the_steps_or_its_floor():
    budget = ProbeBudget(fraction=0.25, min_s=60.0)
    assert budget.limit_s(100.0) == 60.0
    assert budget.limit_s(400.0) == 100.0
    with pytest.raises(ValueError, match="probe_budget_fraction must be > 0. Received"):
        ProbeBudget(fraction=0.0)
    with pytest.raises(ValueError, match="probe_budget_min_s must be >= 0 seconds. Received"):
        ProbeBudget(min_s=-1.0)


def test_probes_that_would_overrun_the_budget_share_it():
    # 40 steps of 50 ms: 2 s of steps, a budget of 0.5 s; unbounded, each probe would take
    # its 2 warm-up steps and probe_seconds = 1 s: 3.3 s in all
    schedule, record = run_with_steps(0.05, 40, probe_seconds=1.0,
                                      budget=ProbeBudget(fraction=0.25, min_s=0.1))
    probes = [sleeping_probe(name, 0.02) for name in ("a", "b", "c")]
    schedule.run([probe for probe, _given in probes])
    assert schedule.applied_budget_s == pytest.approx(0.5)
    assert schedule.spent_s <= 0.5
    assert set(record.probes) == {"a", "b", "c"}
    for _probe, given in probes:
        assert given and given[0] < 1.0  # each was cut to its share
    assert schedule.done and schedule.cached_batch is None


def test_a_probe_that_does_not_fit_is_noted_and_the_rest_still_run():
    schedule, record = run_with_steps(0.01, 20, probe_seconds=1.0,
                                      budget=ProbeBudget(fraction=0.25, min_s=0.2))
    slow, slow_given = sleeping_probe("slow", 0.5)  # its warm-up alone is past the budget
    quick, _ = sleeping_probe("quick", 0.01)
    schedule.run([slow, quick])
    assert slow_given == []
    notes = record.meta["probe_notes"]
    assert "not run: the probe budget (0.2 s" in notes["slow"]
    assert "needs about 1.5 s" in notes["slow"]
    assert "quick" in record.probes
    assert schedule.spent_s <= 0.2


def test_a_probe_left_out_for_its_share_says_its_share():
    # 2 s of budget, 3 probes: the first's share (0.6 s) is less than the 1.5 s it needs,
    # though the budget's 2 s are more: the note must say the share, not only the 2 s
    schedule, record = run_with_steps(0.01, 20, probe_seconds=1.0,
                                      budget=ProbeBudget(fraction=0.25, min_s=2.0))
    slow, slow_given = sleeping_probe("slow", 0.5)
    quick = [sleeping_probe(name, 0.01)[0] for name in ("quick1", "quick2")]
    schedule.run([slow, *quick])
    assert slow_given == []
    note = record.meta["probe_notes"]["slow"]
    assert "had 2.0 s left, 0.6 s of it for this probe (shared with the 2 after it)" in note
    assert "needs about 1.5 s" in note


def test_skipped_failed_and_empty_probes_say_why():
    schedule, record = run_with_steps(0.01, 10)

    def cannot(seconds, deadline):
        raise ProbeNotRun("no batch was cached for the probe")

    def breaks(seconds, deadline):
        raise RuntimeError("boom")

    schedule.run([
        Probe("skipped", "skipped", breaks, skipped="a train_on_batch loop has no data object"),
        Probe("cannot", "cannot", cannot),
        Probe("breaks", "model-alone", breaks),
        Probe("empty", "input-alone", lambda seconds, deadline: None, empty="no batch came"),
    ])
    assert record.meta["probe_notes"] == {
        "skipped": "a train_on_batch loop has no data object",
        "cannot": "no batch was cached for the probe",
        "breaks": "the model-alone probe failed: RuntimeError('boom')",
        "empty": "no batch came",
    }
    assert record.probes == {}


def test_disabled_probes_run_nothing_and_say_so():
    schedule, record = run_with_steps(0.01, 10, enabled=False)
    ran = []
    schedule.run([Probe("a", "a", lambda seconds, deadline: ran.append(seconds))])
    assert ran == []
    assert record.meta["probe_notes"] == {"all": "probes disabled (--no-probes)"}


def test_plan_is_made_once_and_keeps_only_the_probe_steps_batch():
    schedule, _record = run_with_steps(0.01, 10, probe_after_steps=5)
    schedule.plan(total_steps=3)
    assert schedule.at_step == 13  # the last step of a loop known to be 3 steps long
    schedule.plan(total_steps=100)
    assert schedule.at_step == 13
    schedule.offer_batch("early", 32)
    assert schedule.cached_batch is None
    step_by_step(schedule.clock, CLOCK())
    step_by_step(schedule.clock, CLOCK())
    assert schedule.clock.steps_seen == 12
    schedule.offer_batch("the probe step's", 32)
    assert schedule.cached_batch == "the probe step's"
    assert not schedule.due()
    step_by_step(schedule.clock, CLOCK())
    assert schedule.due()


def test_a_run_of_known_length_gets_a_share_of_its_expected_steps_not_the_floor():
    budget = ProbeBudget(fraction=0.25, min_s=60.0, known_min_s=0.5)
    # 160 steps of 20 ms expected: 3.2 s of steps, 0.8 s of probes (the 60 s floor is for
    # runs of unknown length)
    assert budget.limit_s(1.0, expected_run_s=3.2) == pytest.approx(0.8)
    # more measured than expected (the estimate ran short): the measured steps count
    assert budget.limit_s(8.0, expected_run_s=3.2) == pytest.approx(2.0)
    assert budget.limit_s(0.5, expected_run_s=1.0) == 0.5  # a tiny run: its own small floor
    assert budget.limit_s(1.0, expected_run_s=None) == 60.0
    assert "25% of the run's expected 3.2 s of steps, at least 0.5 s" in budget.describe(1.0, 3.2)
    assert "at least 60 s" in budget.describe(1.0)
    with pytest.raises(ValueError, match="probe_budget_known_min_s must be >= 0 seconds"):
        ProbeBudget(known_min_s=-1.0)


def test_the_expected_run_comes_from_the_fits_length_and_its_measured_steps():
    # 50 steps of 20 ms timed (given timestamps: the step times are exact), a fit of 160
    schedule, _record = run_with_steps(0.02, 50, budget=ProbeBudget(fraction=0.25, min_s=60.0,
                                                                    known_min_s=0.1))
    assert schedule.expected_run_s() is None
    assert schedule.budget_s() == 60.0  # length unknown yet: the floor
    schedule.plan(total_steps=160)
    assert schedule.expected_steps == 160
    assert schedule.expected_run_s() == pytest.approx(160 * 0.02)
    assert schedule.budget_s() == pytest.approx(0.25 * 160 * 0.02)


def test_a_fit_of_unknown_epoch_length_gets_a_share_of_the_least_it_can_last():
    # a TFRecord dataset (unknown cardinality), 3 epochs, the probes due in the first: at
    # least 3 x the 50 steps its epoch took so far (was the 60 s floor: 3.3-3.5 s of probes
    # beside 1.4 s of steps, the red-team's s18_tfrecord_noprefetch.py)
    schedule, _record = run_with_steps(0.02, 50, budget=ProbeBudget(fraction=0.25, min_s=60.0,
                                                                    known_min_s=0.1))
    schedule.plan(epochs=3)
    assert schedule.expected_steps is None
    assert schedule.expected_run_s() == pytest.approx(3 * 50 * 0.02)
    assert schedule.budget_s() == pytest.approx(0.25 * 3 * 50 * 0.02)


def test_a_step_limit_makes_a_measuring_session_with_the_floor():
    schedule, _record = run_with_steps(0.02, 50, stop_after_steps=30,
                                       budget=ProbeBudget(fraction=0.25, min_s=5.0))
    schedule.plan(total_steps=160)
    assert schedule.expected_steps is None
    assert schedule.budget_s() == 5.0


def test_a_probe_cut_by_the_budget_says_so_and_one_that_ended_on_its_own_does_not():
    schedule, record = run_with_steps(0.02, 50, probe_seconds=2.0,
                                      budget=ProbeBudget(fraction=0.25, min_s=60.0, known_min_s=0.1))
    schedule.plan(total_steps=100)  # 2 s of steps expected: 0.5 s of probes for all

    def used_all_it_was_given(seconds, deadline):
        return ProbeResult(samples_per_s=1.0, seconds=seconds, batches=5)

    def ended_at_its_cap(seconds, deadline):
        return ProbeResult(samples_per_s=1.0, seconds=0.001, batches=100)

    def ran_out_of_input(seconds, deadline):
        return ProbeResult(samples_per_s=1.0, seconds=0.001, batches=3, detail={"exhausted": True})

    schedule.run([
        Probe("cut", "cut", used_all_it_was_given, max_units=1000),
        Probe("capped", "capped", ended_at_its_cap, max_units=100),
        Probe("ran_out", "ran out", ran_out_of_input, max_units=1000),
    ])
    assert schedule.applied_budget_s == pytest.approx(0.5)
    assert schedule.applied_expected_run_s == pytest.approx(2.0)
    shortened = record.probes["cut"].detail["shortened"]
    assert shortened.startswith("timed 5 step(s) or pull(s) in ")
    assert "25% of the run's expected 2.0 s of steps, at least 0.1 s" in shortened
    assert "shortened" not in record.probes["capped"].detail
    assert "shortened" not in record.probes["ran_out"].detail
    assert set(schedule.spent_each) == {"cut", "capped", "ran_out"}


def test_a_probe_given_its_full_seconds_is_never_shortened():
    schedule, record = run_with_steps(0.02, 50, probe_seconds=0.01,
                                      budget=ProbeBudget(fraction=0.25, min_s=60.0))
    schedule.run([Probe("full", "full",
                        lambda seconds, deadline: ProbeResult(1.0, seconds / 10, batches=1))])
    assert "shortened" not in record.probes["full"].detail


def test_a_window_not_opened_for_a_run_that_did_not_wait_says_what_was_measured():
    """The note names the steps it judged by and their wait, true whatever the run's other
    steps did (a later fit that waits 27% must not sit beside "the run barely waits")."""
    schedule, record = run_with_steps(0.02, 50)
    schedule.cached_batch = object()
    assert schedule.open_window("jax", None, None, True, 0.0) is None
    note = record.meta["probe_notes"]["input_free"]
    assert note == "the 50 steps before it waited 0.0% of their time (below 5%): no input cost to remove there"
    assert "barely" not in note


def test_a_window_opens_without_a_wait_where_the_inputs_workers_share_a_cpu_models_cores():
    """A PyDataset's threads beside a model trained on the CPU fill Keras' queue ahead of the
    trainer: it barely waits, but its step runs slower. The window is what measures that."""
    schedule, record = run_with_steps(0.02, 50)
    schedule.cached_batch = object()
    record.input["producer"], record.model["device"] = "worker-threads", "cpu"

    class Model:  # the window snapshots nothing from it: no variables
        trainable_variables = non_trainable_variables = variables = ()
        optimizer = None
        metrics = ()

    window = schedule.open_window("torch", Model(), None, True, 0.0)
    note = record.meta.get("probe_notes", {}).get("input_free", "")
    assert window is not None, note
    # the same run on a GPU: no window (the workers do not take the model's cores)
    schedule, record = run_with_steps(0.02, 50)
    schedule.cached_batch = object()
    record.input["producer"], record.model["device"] = "worker-threads", "gpu"
    assert schedule.open_window("torch", Model(), None, True, 0.0) is None
    assert "below 5%" in record.meta["probe_notes"]["input_free"]


def test_the_recorded_run_length_is_the_one_the_budget_was_a_share_of():
    # 50 steps of 20 ms measured (1.0 s), a fit announced as 20 steps (0.4 s expected): the
    # budget is a share of the 1.0 s measured, and the record says 1.0 s, not 0.4 s
    schedule, _record = run_with_steps(0.02, 50, budget=ProbeBudget(fraction=0.25, min_s=60.0,
                                                                    known_min_s=0.1))
    schedule.plan(total_steps=20)
    probe, _given = sleeping_probe("model_alone", 0.001)
    schedule.run([probe])
    assert schedule.applied_budget_s == pytest.approx(0.25)
    assert schedule.applied_expected_run_s == pytest.approx(1.0)


def test_a_first_step_measurement_is_stated_with_the_probes_and_comes_off_the_share_not_the_floor():
    budget = ProbeBudget(fraction=0.25, min_s=60.0, known_min_s=1.0)
    # a short run (2 s of steps): the floor stays the probes' own, after 0.8 s of first-step timing
    assert budget.limit_s(1.0, expected_run_s=2.0, charged_s=0.8) == pytest.approx(1.8)
    # a long run: the share (25% of 40 s) covers both
    assert budget.limit_s(1.0, expected_run_s=40.0, charged_s=0.8) == pytest.approx(10.0)
    assert "at least 1 s after the 0.8 s of first-step timing" in budget.describe(1.0, 2.0, 0.8)
    schedule, record = run_with_steps(0.01, 30, probe_after_steps=20, probe_seconds=2.0,
                                      budget=budget)
    schedule.plan(total_steps=200)  # 2 s of steps expected: 0.5 s of share, the 1 s floor
    schedule.charge("tf_pulls", 0.8)
    probe, _ = sleeping_probe("model_alone", 0.01)
    schedule.run([probe])
    spent = schedule.spent_each
    assert set(spent) == {"tf_pulls", "model_alone"} and spent["tf_pulls"] == 0.8
    assert schedule.spent_s == pytest.approx(sum(spent.values()))
    # the probe got the floor's time (0.9 of the 1 s: the planning margin), not 0.1 s
    assert spent["model_alone"] >= 0.8
    assert schedule.spent_s <= schedule.applied_budget_s == pytest.approx(1.8)
