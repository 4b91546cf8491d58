"""Meta-gradient estimators: the interface (`_base.MetaGradientEstimator`) and one file per kind:
`jax.grad` of the generic unroll (`_autodiff`) and the hand-written LSTM backward pass
(`_fused`, the default). A kind is chosen by passing it (`make_meta_gradient(..., estimator=)`).
"""
