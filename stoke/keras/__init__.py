"""Feeding ``model.fit``: the Keras data adapter (``adapter.py``), a background prefetcher
(``prefetch.py``) and one device feed per backend (``jax_feed.py``, ``torch_feed.py``,
``tf_feed.py``), each importing its backend only when used."""
