"""Meta-gradient estimators: the protocol (`_base.MetaGradientEstimator`: `bind` -> `Estimation`
with `init` and `estimate`, the estimator owning its state and settings) and one file per kind:
backpropagation through the unroll (`_backprop`, abstract) by `jax.grad` of the generic unroll
(`_autodiff`) or the hand-written LSTM backward pass (`_fused`, the default; the LSTM kind only),
and evolution strategies over persistent particles (`_evolution`, abstract, with antithetic ES
in `_es` and PES in `_pes`). A config names one (`Config.estimator`) in the registry
(`_named.ESTIMATORS`), which builds it with the config's settings; the API also takes one
directly (`make_meta_gradient(..., estimator=)`, `init_state`, `make_train_chunk`). No code
outside this package asks which estimator it has.
"""
