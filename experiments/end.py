"""`end`: raw gradients, meta-objective the final loss f(x_19) (the reference's `RNN_simple_end_res`).

    make train EXP=end

The reference: after 50,000 meta-steps (20,000, then 30,000 more) the rolling mean of log10 f(x_19) over
the last 5,000 meta-steps is -8.12.
"""

from l2lgd import Config, Experiment

EXPERIMENT = Experiment(
    config=Config(name="end", preprocessing="identity", objective="end", meta_steps=50_000),
    rolling_window=5_000,
    reference_figure=-8.12,
)
