"""Learned optimizers: the interface a kind implements (`_base.LearnedOptimizer`), the registry of
kinds and `make_optimizer` (`_kinds`), one file per kind (`_lstm_optimizer`: the coordinate-wise
LSTM of `_lstm` on a gradient preprocessing of `_preprocessing`, the first kind), the optax face
of any kind (`_optax_face`), and the hand-designed baselines (`_baselines`).

Public names are re-exported by `l2lgd`; this package's `__init__` imports nothing, so any
room may import one of its modules without loading the others.
"""
