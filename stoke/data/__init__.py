"""The data side of a pipeline: what a sample is and in which order samples come.

Sources (``sources.py``) and record formats (``formats/``), the seeded plan (``plan.py``,
``shard_plan.py`` for shard-based sources), the per-sample program (``program.py``), sample
structure and dtypes (``structure.py``), batching (``padding.py``, ``buckets.py``),
``cache.py`` and mixing (``mix.py``, ``mix_source.py``); ``pipeline.py`` is the builder users
chain (``from_...().shuffle().map().batch()``), which hands a finished pipeline to the loader
(``stoke.loader``) or to Keras (``stoke.keras``). Nothing here starts a process.
"""
