"""Meta-gradient estimators: the interface (`_base.MetaGradientEstimator`) and one file per kind:
`jax.grad` of the generic unroll (`_autodiff`), the hand-written LSTM backward pass (`_fused`,
the default), and evolution strategies over persistent particles (`_evolution`, with antithetic
ES in `_es` and PES in `_pes`). A config chooses one by name (`Config.estimator`,
`_named.estimator_for`); the API also takes one directly (`make_meta_gradient(..., estimator=)`).
"""
