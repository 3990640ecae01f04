"""The per-sample program: read index ``i`` from the source, run the ``map``/``filter`` chain,
and hand back the sample (or say it was filtered out).

Every executor runs exactly this code, in the trainer's thread, in worker threads or in
worker processes; that is why results do not depend on the executor. Per-sample randomness
comes from ``(seed, epoch, index, step)``, never from the worker.
"""

from __future__ import annotations

import functools
import inspect
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stoke.data.formats.base import DescribedSamples, PrefetchingSource
from stoke.data.structure import DtypePolicy
from stoke.errors import SampleError

FILTERED = object()  # what `run` returns for a sample that a filter dropped


def keep_unfiltered(sample: Any) -> bool:
    """A filter predicate for sources whose samples come out of another program (``cache()``,
    ``stoke.mix``): a sample that program's filters dropped stays dropped."""
    return sample is not FILTERED


@dataclass(frozen=True)
class MapStep:
    """``fn(sample)`` or ``fn(sample, rng)`` -> sample."""

    fn: Callable[..., Any]
    with_rng: bool

    @property
    def name(self) -> str:
        return f"map({_callable_name(self.fn)})"


@dataclass(frozen=True)
class FilterStep:
    """``predicate(sample)`` -> keep?"""

    predicate: Callable[[Any], bool]

    @property
    def name(self) -> str:
        return f"filter({_callable_name(self.predicate)})"


def has_filter(steps: tuple[MapStep | FilterStep, ...]) -> bool:
    """Whether ``steps`` hold a ``filter``: then how many samples an epoch yields, and so its
    length and how its batches fill, is known only once it runs."""
    return any(isinstance(step, FilterStep) for step in steps)


def _callable_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def wants_rng(fn: Callable[..., Any]) -> bool:
    """True when ``fn`` takes a second argument (or one named ``rng``) for randomness."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.name == "rng" for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    return len(required) >= 2


@functools.lru_cache(maxsize=64)
def _philox_key(seed: int) -> tuple[int, int]:
    """The 128-bit Philox key of a pipeline seed (any non-negative int), mixed once."""
    return tuple(int(k) for k in np.random.SeedSequence(seed).generate_state(2, np.uint64))


class _ThreadRng(threading.local):
    """One Philox generator per thread, set to a sample's coordinates before each use:
    building a ``Generator`` costs 10-20 µs, setting a state about 1.5 µs."""

    def __init__(self) -> None:
        self.bit_generator = np.random.Philox(key=[0, 0])
        self.generator = np.random.Generator(self.bit_generator)
        self.state = self.bit_generator.state


_THREAD_RNG = _ThreadRng()


def sample_rng(seed: int, epoch: int, index: int, step: int) -> np.random.Generator:
    """The generator a ``map`` step gets for one sample: a function of its coordinates only.

    Counter-based: Philox keyed by the seed, its counter starting at ``(0, index, epoch,
    step)``, so each (sample, epoch, step) has its own stream of 2**64 blocks whatever the
    executor, worker or order. The generator object is this thread's, reset for each call:
    use it inside the function, do not keep it.
    """
    rng = _THREAD_RNG
    state = rng.state
    state["state"]["key"][:] = _philox_key(seed)
    state["state"]["counter"][:] = (0, index, epoch, step)
    state["buffer_pos"] = 4  # nothing buffered: the next draw comes from the counter
    state["has_uint32"] = 0
    rng.bit_generator.state = state
    return rng.generator


def seed_worker_globals(seed: int, worker_index: int) -> None:
    """Seed a worker process's global ``random`` and ``numpy.random`` from the pipeline seed
    and the worker's index, as torch's DataLoader seeds its workers: code that draws from
    them (a tutorial Sequence's augmentation, a module that calls ``np.random.seed(0)`` on
    import) gets a different stream in each worker. Which samples draw which numbers still
    depends on which worker runs them; the per-sample ``rng`` of ``map`` does not. Run once
    the user's modules are imported."""
    import random

    state = np.random.SeedSequence([seed, worker_index, 0x90B1]).generate_state(2)
    random.seed(int(state[0]))
    np.random.seed(int(state[1]))


@dataclass(frozen=True)
class SampleProgram:
    """What to do for one index: read it, then run each step in order."""

    source: Any
    steps: tuple[MapStep | FilterStep, ...] = ()
    seed: int = 0
    dtype_policy: DtypePolicy = field(default_factory=DtypePolicy)
    step_offset: int = 0  # steps that ran before this program's source (cache()): rng positions

    @property
    def has_filter(self) -> bool:
        return has_filter(self.steps)

    def run(self, index: int, epoch: int) -> Any:
        """The sample at ``index`` (a Python int) after every step, or :data:`FILTERED`.

        Raises :class:`SampleError` naming the index, the stage and the original error.
        """
        position = -1  # the source read; named only when something fails (hot path)
        try:
            sample = self.source[index]
            for position, step in enumerate(self.steps):
                if type(step) is MapStep:
                    if step.with_rng:
                        sample = step.fn(sample, sample_rng(self.seed, epoch, index,
                                                            position + self.step_offset))
                    else:
                        sample = step.fn(sample)
                elif not step.predicate(sample):
                    return FILTERED
            return sample
        except (SampleError, KeyboardInterrupt):  # Ctrl-C stays Ctrl-C
            raise
        except BaseException as exc:  # noqa: BLE001 - re-raised with where it happened
            # (SystemExit and other BaseExceptions from user code too: they name the sample)
            stage = "source read" if position < 0 else self.steps[position].name
            raise sample_error(int(index), stage, exc, self.source) from exc


def prefetch_chunk(program: Any, indices: Any) -> None:
    """Start the reads of a chunk's samples now, when the program's source reads ahead
    (remote shards: :class:`~stoke.data.formats.base.PrefetchingSource`); nothing otherwise.
    Any program of the executors' protocol (it has ``source``) may be given."""
    if isinstance(program.source, PrefetchingSource):
        program.source.prefetch(indices)


def tasks_per_worker(program: Any) -> int:
    """Tasks to keep sent to each worker: the one it runs and the chunks queued behind it,
    whose reads start as they arrive (:func:`prefetch_chunk`): 2, or more when the source
    reads over the network (:meth:`~stoke.data.formats.base.PrefetchingSource.chunks_ahead`).
    The ring's default depth is this many slots per worker, plus 2."""
    source = program.source
    ahead = source.chunks_ahead() if isinstance(source, PrefetchingSource) else 1
    return 1 + max(1, int(ahead))


def sample_error(index: int, stage: str, exc: BaseException, source: Any = None) -> SampleError:
    """The :class:`SampleError` of ``exc``, raised at ``stage`` on sample ``index`` (named by
    ``source`` when it describes its samples: :class:`~stoke.data.formats.base.DescribedSamples`)."""
    sample = source.describe_sample(index) if isinstance(source, DescribedSamples) else ""
    return SampleError(index, stage, type(exc).__name__, str(exc),
                       "".join(traceback.format_exception(exc)), sample=sample)
