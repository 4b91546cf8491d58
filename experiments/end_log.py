"""`end_log`: raw gradients, meta-objective log f(x_19) (the reference's `RNN_simple_end_log_res`).

    make train EXP=end_log

The reference: after 50,000 meta-steps the rolling mean of log10 f(x_19) over the last 5,000 meta-steps
is -7.97.
"""

from l2lgd import Config, Experiment

EXPERIMENT = Experiment(
    config=Config(name="end_log", preprocessing="identity", objective="end_log", meta_steps=50_000),
    rolling_window=5_000,
    reference_figure=-7.97,
)
