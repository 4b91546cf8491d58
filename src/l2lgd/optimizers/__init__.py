"""The learned optimizer: the coordinate-wise LSTM (`_lstm`), the gradient preprocessings, its
extension point (`_preprocessing`), the optimizer that joins them (`_learned`), its optax face
(`_optax_face`), and the reference's hand-written baselines (`_baselines`).

Public names are re-exported by `l2lgd`; this package's `__init__` imports nothing, so any
room may import one of its modules without loading the others.
"""
