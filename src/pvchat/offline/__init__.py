"""The offline world and the demo: clients of the library, never a dependency of it.

- :mod:`pvchat.offline.world`: people made of real faces that ship offline, rendered into scenes
  and clips with ground truth (``pvchat world``).
- :mod:`pvchat.offline.pool`: the world's people as a negative pool (:func:`~pvchat.offline.pool.world_pool`),
  what the commands pass to synthesis when the user names none.
- :mod:`pvchat.offline.demo`: ``pvchat demo``, the learn pipeline end to end on the world.

The library (``model``, ``faces``, ``synth``, ``qa``, ``train``, ``eval``, ``learn``) takes its
inputs from the caller: it is handed a pool, never builds one from the world itself. The two
library modules that stand on the world do so as its clients, and say so: ``eval/benchmark.py``
renders the benchmark from it and ``train/pretrain.py`` aligns a base on it.
"""
