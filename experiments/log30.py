"""`log30`: log rescaling with k = log_range = 30, meta-objective log f(x_19)
(the reference's `RNN_log30_end_log_res`). The default experiment of `make train`.

    make train EXP=log30

The reference: the rolling mean of log10 f(x_19) over the last 5,000 meta-steps is -20.12 after 50,000
meta-steps and -23.20 after 100,000; the reference's RMSProp gives about -18.2.
"""

from l2lgd import Config, Experiment

EXPERIMENT = Experiment(
    config=Config(
        name="log30",
        preprocessing="log_rescale",
        log_range=30.0,
        objective="end_log",
        meta_steps=100_000,
    ),
    rolling_window=5_000,
    reference_figure=-23.20,
)
