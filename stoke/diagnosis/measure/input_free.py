"""The input-free window: a few steps of the user's own ``fit`` with the input made free.

The third bound, next to the two probes of :mod:`stoke.diagnosis.measure.model_probe`. The model-alone
probe repeats Keras' compiled step on a batch already on the device; what a run would take
per step *if its input cost nothing* is that plus everything else ``fit`` does per step: the
epoch iterator, the callbacks (the progress bar, the user's own), the host-to-device handling
of the step, the doctor's hooks. For a large model the difference does not matter; for a
small one it is most of the step (measured: a JAX model of 45 µs alone ran 300 µs per step in
``fit`` fed from a cached batch), and a prediction from the model alone comes out several
times too high. The time a step takes right after a long wait is no good either: the steps
after a 20 ms wait ran 0.8 ms where back-to-back ones ran 0.3 ms (cold caches, idle cores).

So the doctor measures it directly, once per run, inside the run, right before the probes:
inside the step that triggers them, right after Keras' train function returned, the doctor
calls that train function again ``planned`` times on the step's own batch (JAX: threading the
state each call returns, the wrapped iterator handing the batch over again; torch: the same
arguments; TensorFlow when the doctor pulls outside the graph: the batch unpulled), back to
back, until ``planned`` calls or ``max_seconds`` (or the probe budget's ``deadline``: see
:mod:`stoke.diagnosis.measure.probe_schedule`, which opens the window). The first ``WARMUP_CALLS`` calls settle
caches; the rest are timed from a device sync to a device sync, so asynchronous dispatch
overlaps as it does in training. What ``fit`` does per step outside the train function (the
callbacks, the progress bar, the epoch iterator) is not in those calls: it is measured on the
run's own steps (step time less wait less the train function's time, the median of recent
steps, ``detail["loop_s_after_wait"]``), right after their waits, where it runs slower than
back to back, as the train function does (issue 14: on JAX with a tiny model, 2.1x for the loop,
3.2x for the train function, steps after a 20 ms sleep against steps after none in one run).
The window times that train function both ways (its calls back to back, and the median of the
run's steps' ``call_s``, ``detail["call_s_after_wait"]``), and the loop is added to each call
scaled by that ratio to the power ``LOOP_SHARE_EXPONENT`` (``detail["warm_share"]``, never above
1; ``detail["loop_share"]``), ``detail["loop_s_per_step"]``: the loop slows less after a wait
than the train function does, and by a power law of it (``benchmarks/after_wait_slowdown.py``
on JAX: the loop 2.1-4.3x, the train function 3.2-8.3x, loop = call^0.69 in session 10;
session 11, quiet slot, 3 runs: loop 2.73/3.06/2.69x, call 4.24/4.56/4.33x, exponents
0.70/0.74/0.67). Scaled by the share itself, the loop came out 2-3x short: the tiny model's
window predicted x130-x256 in 3 doctor runs where its cached twin ran x122 (the fit loop
back to back 77 us, the window's loop 29-60 us). Only on JAX, where that was measured;
elsewhere (``scale_loop`` False: torch within 10% of its fixed twins, TensorFlow above them
already) the loop stays as the steps timed it and the share is only recorded.
Where the run's batches come from the script's generator on the trainer's thread (JAX, torch),
taking a ready batch in (the hand-over, which a fixed input still pays) is timed warm at the
window's end (:mod:`stoke.diagnosis.measure.handover`, ``detail["handover_s"]``): the analysis
keeps that in the predicted step, not the wait less the generator's time. On TensorFlow each call is also
charged what pulling a batch that is already waiting costs (the doctor's measured pull floor,
which its step times count as compute), once: the loop the steps timed holds it already (the
pull less the floor is their wait), and comes without it (custom_train_step.py, tf.data,
a 1.2 ms model: the floor, 0.36 ms, counted twice in a 2.4 ms step, x15.9 predicted against
x29-34 measured on its fixed twin). The process's CPU time per call is kept too
(``detail["cpu_s_per_step"]``): the trainer's own CPU per step, for the shared-cores
prediction.

What it does to the run, on purpose and written in the result's ``detail``:

- the weights, optimizer and metric state after the window are the ones before it: JAX gets
  its state (copied before the window) back; TensorFlow and torch get every model, optimizer
  and metric variable restored;
- the step returns its own logs: no callback, progress bar update, history entry, metric or
  checkpoint ever sees a window call; the epoch's own steps and batches are untouched.

Where the run's ``fit`` dispatches each step's batch-end to Keras' thread pool (no callback
overriding ``on_train_batch_end``, on JAX or torch: ``ModelFacts.batch_end_async``), the
fixed twin pays that pool beside every step: a pool thread converts the step's logs to Python
numbers while the next step runs, competing with it for the cores and the interpreter, which
it did not during the run's waits. So the window's second half hands each call's logs to a
``CallbackList`` of its own with no callback in it, as ``fit`` does (its first
``POOL_WARMUP_CALLS`` untimed, while the pool's threads start), and its per-call time is that
half's (``detail["pooled_call_s_per_step"]``); the first half times the train function alone,
the figure the warm share compares with the run's steps. The run's loop holds the hand-off's
cost on the trainer's thread, which the pooled calls pay too: not added twice
(``detail["handoff_s"]``). Measured in session 17 on JAX, 2 cores, a Dense-64 model behind a
3 ms generator (the wild corpus' generator_tiny_model.py): its fixed twin ran 0.20-0.28 ms a
step (0.14 ms with a per-batch callback, batch-ends on the trainer's thread); the window
without the pool gave 0.12-0.25 ms (median 0.156), with it 0.21-0.32 ms.

Not run for ``train_on_batch`` loops (the loop is the script's own code), for TensorFlow with
the pull inside the graph, or for runs that barely wait (nothing to remove), unless the input's
workers share a CPU-trained model's cores (:func:`stoke.diagnosis.record.input_shares_the_cores`:
their cost shows as a slower step, not as a wait);
``meta["probe_notes"]["input_free"]`` says why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from stoke.diagnosis.measure.training_state import (
    copy_jax_state,
    hand_jax_state_to_model,
    snapshot_variables,
)
from stoke.diagnosis.record import ProbeResult

_perf_counter = time.perf_counter

WARMUP_CALLS = 2
MIN_TIMED_CALLS = 3
MIN_CALLS = WARMUP_CALLS + MIN_TIMED_CALLS
MAX_CALLS = 200
# Where the run pools its batch-ends: calls of the window's second half hand their logs to a
# pool, the first of them untimed while its threads start
POOL_WARMUP_CALLS = 2
# The fit loop's after-wait slowdown is the train function's to this power (see above).
LOOP_SHARE_EXPONENT = 0.7
# A run waiting less than this share of its steps so far has nothing to remove: no window.
MIN_WAIT_FRACTION = 0.05


def planned_calls(compute_s: float, seconds: float) -> int:
    """How many calls the window should last: about ``seconds`` of back-to-back steps of
    ``compute_s`` each (the recent steps' time not spent waiting,
    ``StepClock.compute_s_estimate``), within [MIN_CALLS, MAX_CALLS]."""
    estimate = compute_s if compute_s > 0 else 1e-3
    return int(min(MAX_CALLS, max(MIN_CALLS, WARMUP_CALLS + math.ceil(seconds / estimate))))


def wait_fraction(steps) -> float:
    total = sum(s.step_s for s in steps)
    return sum(min(s.wait_s, s.step_s) for s in steps) / total if total > 0 else 0.0


class InputFreeWindow:
    """One window in progress. Opened by the probe schedule after a real step; each train-function
    call of the window goes through :meth:`call`; the last one returns the step's result with
    the training state put back, and leaves its measurement in ``result``."""

    def __init__(self, backend: str, model, step_result: Any, batch: Any, batch_size: int,
                 planned: int, ready_pull_s: float = 0.0, loop_s: float = 0.0,
                 max_seconds: float = 2.0, deadline: float | None = None,
                 call_s_after_wait: float = 0.0,
                 handover: Callable[[Any], float] | None = None,
                 scale_loop: bool = True, batch_end_async: bool = False):
        self.backend = backend
        # what fit does per step outside the train function (callbacks, progress bar,
        # iterator), measured on the run's own steps: the window's calls do not pay it
        self.loop_s = loop_s
        # the train function's own time per step on the run's steps (right after their waits)
        self.call_s_after_wait = call_s_after_wait
        # whether the loop counts at the train function's warm share (else as the steps took it)
        self.scale_loop = scale_loop
        # times taking a ready batch (the window's) in, warm (None: not this run's input path)
        self.handover = handover
        self.max_seconds = max_seconds
        # fit hands each step's logs to Keras' thread pool: the window's calls do too (see above)
        self.batch_end_async = batch_end_async
        self._batch_ends = None  # the window's own CallbackList, no callback in it
        self._handoff_s = 0.0  # the timed pooled calls' hand-offs, on the trainer's thread
        # the call after which the window's calls pool their batch-ends (None: never): the
        # first half times the train function alone (the warm share's figure), the second
        # with the pool, as the run's fit has it
        half = (planned - WARMUP_CALLS) // 2
        self._pool_after = (
            WARMUP_CALLS + half
            if batch_end_async and half >= MIN_TIMED_CALLS + POOL_WARMUP_CALLS else None
        )
        self._alone: tuple[int, float] | None = None  # (calls, seconds) before the pool
        self._pooled_from: float | None = None
        # the perf_counter() time the probe budget ends this window by (None: no budget)
        self.deadline = deadline
        self._cpu_start = time.process_time()
        self._cpu_from: float | None = None
        # TensorFlow: what pulling a batch that is already waiting costs (the doctor's measured
        # pull floor). Every real step pays it and the doctor counts it as compute, not wait;
        # the window hands its batch over without a pull, so it is added back per call.
        self.ready_pull_s = ready_pull_s
        self.batch = batch
        self.batch_size = batch_size
        self.planned = planned
        self.calls = 0
        self.started_at = _perf_counter()
        self.result: ProbeResult | None = None
        self._timed_from: float | None = None
        self._saved_jax_state = None
        self._restore = None
        if backend == "jax":
            # Keras donates the state to each step: keep a copy to hand back at the end.
            _logs, state = step_result
            self._saved_jax_state = copy_jax_state(state)
        else:
            self._restore = snapshot_variables(model)

    def call(self, original, sync, args: tuple) -> tuple[Any, bool]:
        """Run one of the window's train-function calls; returns (result, window_finished).
        The window ends after ``planned`` calls, or once ``max_seconds`` have passed with at
        least ``MIN_TIMED_CALLS`` timed (a slow step must not make the probe slow)."""
        called = _perf_counter()
        result = original(*args)
        self.calls += 1
        pool_after = self._pool_after
        if pool_after is not None and self.calls > pool_after:
            self._hand_logs_over(result)
        if self.calls == WARMUP_CALLS:
            sync(result)
            self._timed_from = _perf_counter()
            self._cpu_from = time.process_time()
        elif pool_after is not None and self.calls == pool_after:
            sync(result)
            self._alone = (self.calls - WARMUP_CALLS, _perf_counter() - self._timed_from)
        elif pool_after is not None and self.calls == pool_after + POOL_WARMUP_CALLS:
            sync(result)
            self._pooled_from = _perf_counter()
            self._handoff_s = 0.0
        timed_calls = self.calls - WARMUP_CALLS if self._timed_from is not None else 0
        now = _perf_counter()
        spent = now - self.started_at
        # at least MIN_TIMED_CALLS timed calls, unless calls are so slow that one is enough
        over_time = timed_calls >= 1 and spent >= self.max_seconds and (
            timed_calls >= MIN_TIMED_CALLS or spent >= 3 * self.max_seconds
        )
        # the budget: no call that would end past the deadline, once one call was timed
        over_budget = (
            self.deadline is not None and timed_calls >= 1 and now + (now - called) >= self.deadline
        )
        over_time = over_time or over_budget
        if self.calls < self.planned and not over_time:
            return result, False
        self._end_batch_ends()
        sync(result)
        ended = _perf_counter()
        elapsed = ended - (self._timed_from or self.started_at)
        cpu_s = time.process_time() - (self._cpu_from if self._cpu_from is not None else self._cpu_start)
        timed_calls = timed_calls or self.calls
        pooled = None
        if self._pooled_from is not None and self.calls > pool_after + POOL_WARMUP_CALLS:
            pooled = (self.calls - pool_after - POOL_WARMUP_CALLS, ended - self._pooled_from)
        self.result = self._measurement(timed_calls, elapsed, cpu_s, self._alone, pooled)
        self._time_handover()
        return result, True

    def _hand_logs_over(self, result) -> None:
        """The call's logs to a pool thread, as ``fit``'s ``on_train_batch_end`` does under
        asynchronous dispatch (Keras' own ``CallbackList``, with no callback: nothing of the
        user's sees them)."""
        started = _perf_counter()
        if self._batch_ends is None:
            import keras

            self._batch_ends = keras.callbacks.CallbackList(callbacks=[])
            self._batch_ends.on_train_begin()
        logs = result[0] if self.backend == "jax" else result
        self._batch_ends.on_train_batch_end(self.calls, logs)
        if self._pooled_from is not None:
            self._handoff_s += _perf_counter() - started

    def _end_batch_ends(self) -> None:
        """Wait for the hand-offs' conversions, and let the pool's threads go."""
        batch_ends, self._batch_ends = self._batch_ends, None
        if batch_ends is not None:
            batch_ends.on_train_end()

    def _time_handover(self) -> None:
        """Right after the calls, still warm: what taking a ready batch in costs."""
        if self.handover is None or self.result is None:
            return
        try:
            self.result.detail["handover_s"] = self.handover(self.batch)
        except Exception as error:  # the window's figures stand without it
            self.result.detail["handover_error"] = repr(error)[:300]

    def restored_result(self, step_result, last_result):
        """What the step hands back to ``fit`` after the window: the step's own logs, with the
        training state of before the window (JAX: the copy; TensorFlow, torch: restored)."""
        if self.backend == "jax":
            logs, _state = step_result
            state, self._saved_jax_state = self._saved_jax_state, None
            return logs, state
        if self._restore is not None:
            self._restore()
            self._restore = None
        return step_result

    def abandon(self, model) -> None:
        """The window ended early (a step raised, the fit stopped): put the state back,
        measure nothing."""
        self._end_batch_ends()
        if self._restore is not None:
            self._restore()
            self._restore = None
        if self._saved_jax_state is not None:
            state, self._saved_jax_state = self._saved_jax_state, None
            hand_jax_state_to_model(model, (None, state))
            model.jax_state_sync()

    def warm_share(self, call_s: float) -> float:
        """The share of its after-wait time the trainer's own work takes back to back: the
        window's call (``call_s``) over the run's steps' (1.0 when those were not timed, and
        never above 1: a window timed under heavier load makes nothing slower)."""
        if self.call_s_after_wait <= 0 or call_s <= 0:
            return 1.0
        return min(1.0, call_s / self.call_s_after_wait)

    def _measurement(self, calls: int, elapsed: float, cpu_s: float,
                     alone: tuple[int, float] | None = None,
                     pooled: tuple[int, float] | None = None) -> ProbeResult:
        """``alone``/``pooled``: (calls, seconds) of the window's halves without and with the
        pool, where the run pools its batch-ends and both were timed."""
        if alone is not None and pooled is not None and alone[0] and pooled[0]:
            call_s = alone[1] / alone[0]  # the train function's own, for the warm share
            pooled_call_s = pooled[1] / pooled[0]
            handoff_s = self._handoff_s / pooled[0]
        else:
            call_s = elapsed / calls if calls else 0.0
            pooled_call_s, handoff_s = None, 0.0
        share = self.warm_share(call_s)
        loop_share = share ** LOOP_SHARE_EXPONENT if self.scale_loop else 1.0
        # the run's steps timed the doctor's pull of a ready batch (its floor) in their loop:
        # counted once, as ready_pull_s, which the window's calls (no pull) are charged;
        # the pooled calls' own hand-offs are in their time, and the run's loop held them too
        loop_s = max(0.0, self.loop_s - self.ready_pull_s - handoff_s) * loop_share  # back to back
        per_call = (pooled_call_s or call_s) + self.ready_pull_s + loop_s
        return ProbeResult(
            samples_per_s=self.batch_size / per_call if per_call > 0 else 0.0,
            seconds=elapsed,
            batches=calls,
            detail={
                "method": (
                    "the run's train function called again on the step's own batch, back to "
                    "back inside that step (out of the callbacks' sight), timed between two "
                    "device syncs, plus the fit loop's own per-step time outside the train "
                    "function (callbacks, progress bar, iterator) measured on the run's steps, "
                    "scaled by how much faster the train function ran back to back than in "
                    f"those steps, to the power {LOOP_SHARE_EXPONENT:g}"
                ),
                "s_per_step": per_call,
                "loop_s_per_step": loop_s,
                "loop_s_after_wait": self.loop_s,
                "call_s_per_step": call_s,
                "call_s_after_wait": self.call_s_after_wait,
                "warm_share": share,
                "loop_share": loop_share,
                "loop_scaled": self.scale_loop,
                "batch_end_async": self.batch_end_async,
                # each call with the pool converting its logs (None: not timed), and the
                # hand-off's own part of it, on the trainer's thread
                "pooled_call_s_per_step": pooled_call_s,
                "handoff_s": handoff_s,
                # the whole process's CPU per call while the input was free: the trainer's own
                # (its compute threads on a CPU model, dispatch on a GPU one), plus the
                # loop's share; what the shared-cores prediction needs
                "cpu_s_per_step": (cpu_s / calls if calls else 0.0) + loop_s,
                "batch_size": self.batch_size,
                "calls": self.calls,
                "ready_pull_s": self.ready_pull_s,
                "warmup_calls": WARMUP_CALLS,
                "weights": (
                    "the state before the window was handed back to the run"
                    if self.backend == "jax"
                    else "all model, optimizer and metric variables snapshotted and restored"
                ),
                "effect_on_run": (
                    "extra calls inside one step, invisible to callbacks, progress bar and "
                    "history; the epoch's own steps, batches and logs were untouched"
                ),
            },
        )
