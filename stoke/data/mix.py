"""``stoke.mix``: a deterministic weighted interleave of several pipelines' samples.

Owns the builder, :func:`mix`: it checks the pipelines and weights and makes a pipeline over
their mixed source. How an epoch of the mix is made, and the mixed source and plan
themselves, are :mod:`stoke.data.mix_source`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

from stoke.data.mix_source import MAX_SOURCE_SAMPLES, MAX_SOURCES, MixSource
from stoke.data.pipeline import Pipeline
from stoke.data.program import FilterStep, keep_unfiltered


def mix(pipelines: Sequence[Pipeline], weights: Sequence[float] | None = None, seed: int = 0,
        samples_per_epoch: int | None = None) -> Pipeline:
    """Interleave the samples of ``pipelines``, drawing from pipeline ``k`` a ``weights[k]``
    share of each epoch; deterministic by ``seed``; each pipeline's samples come exactly
    once per its own epoch; resumable with ``it.state()``. Mix unbatched pipelines, then
    batch (every pipeline must give samples of the same structure)::

        text = stoke.mix([web.map(tokenize), books.map(tokenize)], weights=[0.7, 0.3], seed=0)
        for batch in text.padded_batch(64).iter(): ...

    ``samples_per_epoch``: draws per epoch of the mix (default: the pipelines' lengths
    added). Weights need not add up to one (they are normalised).
    """
    pipelines = list(pipelines)
    if not pipelines:
        raise ValueError("mix needs at least one pipeline. Received: []")
    if len(pipelines) > MAX_SOURCES:
        raise ValueError(f"mix takes at most {MAX_SOURCES} pipelines. "
                         f"Received: {len(pipelines)}")
    weights = [1.0] * len(pipelines) if weights is None else [float(w) for w in weights]
    if len(weights) != len(pipelines) or any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            "mix needs one non-negative weight per pipeline, not all zero. Received: "
            f"{len(pipelines)} pipelines, weights={weights}"
        )
    for k, pipe in enumerate(pipelines):
        if not isinstance(pipe, Pipeline):
            raise TypeError(f"mix takes stoke pipelines. Received at {k}: {type(pipe).__name__}")
        if pipe.batch_size is not None or pipe.padding is not None or pipe.buckets is not None:
            raise ValueError(
                f"pipeline {k} is already batched; mix samples, then batch: "
                "stoke.data.mix([a, b], weights=...).batch(64)."
            )
        if isinstance(pipe.source, MixSource):
            raise ValueError(f"pipeline {k} is a mix itself; mix its pipelines in one "
                             "stoke.data.mix with the weights multiplied out.")
        if pipe.shard_count != 1 or pipe.repeat_count != 1:
            raise ValueError(f"pipeline {k}: shard or repeat the mix, not the pipelines in it.")
        if len(pipe.source) == 0:
            raise ValueError(f"pipeline {k} is empty: every mixed pipeline needs samples.")
        if len(pipe.source) > MAX_SOURCE_SAMPLES:
            raise ValueError(f"pipeline {k} has more than 2**32 samples; mix supports fewer.")
    total = samples_per_epoch if samples_per_epoch is not None else sum(
        len(p.source) for p in pipelines)
    if not isinstance(total, int) or total < 1:
        raise ValueError(f"samples_per_epoch must be a positive int. Received: {total!r}")
    source = MixSource([p.program for p in pipelines], [p.plan_spec for p in pipelines],
                       weights, seed, total)
    has_filter = any(p.steps_have_filter() for p in pipelines)
    steps = (FilterStep(keep_unfiltered),) if has_filter else ()
    return Pipeline(source, steps=steps, seed=int(seed))
