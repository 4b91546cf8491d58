"""`log15_end`: log rescaling with k = log_range = 15, meta-objective f(x_19)
(the reference's `RNN_log15_end_res`).

    make train EXP=log15_end

The reference: after 50,000 meta-steps the rolling mean of log10 f(x_19) over the last 5,000 meta-steps
is -7.27.
"""

from l2lgd import Config, Experiment

EXPERIMENT = Experiment(
    config=Config(
        name="log15_end", preprocessing="log_rescale", log_range=15.0, objective="end", meta_steps=50_000
    ),
    rolling_window=5_000,
    reference_figure=-7.27,
)
