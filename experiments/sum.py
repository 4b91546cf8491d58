"""`sum`: raw gradients, meta-objective the sum of the 20 losses (the reference's `RNN_simple_sum_res`).

    make train EXP=sum

The reference: after 20,000 meta-steps the rolling mean of log10 f(x_19) over the last 2,000 meta-steps
is -6.33 ("average_log_result" at it 20000).
"""

from l2lgd import Config, Experiment

EXPERIMENT = Experiment(
    config=Config(name="sum", preprocessing="identity", objective="sum", meta_steps=20_000),
    rolling_window=2_000,
    reference_figure=-6.33,
)
