"""`floor`: beyond the reference, a learned optimizer that reaches the float32 floor.

    make train EXP=floor            # about a minute on one core
    python -m l2lgd ablate floor    # the variants below -> experiments/ABLATIONS.md

Same task family and scoring as the reference notebook (2-D quadratics, 20 losses, f(x_19) scored), same
coordinate-wise two-layer LSTM (20 units). What changes, each a Config field:

- preprocessing="lr_ratio": the LSTM never sees a gradient's magnitude. It sees the ratio of
  successive gradients r_t = g_t / g_{t-1} (clipped to [-2, 2]; 0 at the first step), its own
  previous log learning rate, and a first-step flag, and outputs a per-coordinate log learning
  rate: update = -exp(out - 2) * g. On a quadratic r_t = 1 - h*lr_{t-1} reveals the curvature
  h, so the LSTM can learn a secant (Newton-like) step; and since the step scales with the
  gradient there is no e^-k floor as in the reference's log rescaling. A gradient of exactly 0
  gives a step of exactly 0, without 0/0 or log 0.
- objective="sum_log": the sum over the 20 steps of safe_log(f(x_t)), so every decade gained at
  every step counts; safe_log is finite at 0 with no gradient there, so tasks that already
  underflowed stop contributing instead of producing NaN.
- batch_size=32 with per_task_clip=True: each task's meta-gradient is clipped to norm 1
  before averaging, so no task dominates the batch.
- meta_lr=1e-3, 3,000 meta-steps, a snapshot every 250 for model selection.

Measured (seed 0, `python -m l2lgd eval floor`): see experiments/REPORT.md and the ablation
table in experiments/ABLATIONS.md.
"""

from l2lgd import Config, Experiment

EXPERIMENT = Experiment(
    config=Config(
        name="floor",
        preprocessing="lr_ratio",
        objective="sum_log",
        batch_size=32,
        per_task_clip=True,
        meta_lr=1e-3,
        meta_steps=3_000,
    ),
    checkpoint_every=250,
    rolling_window=500,
    ablations={
        "mean meta-gradient (no per-task clip)": {"per_task_clip": False},
        "objective log f(x_19) (end_log)": {"objective": "end_log"},
        "batch 1": {"batch_size": 1},
        "reference's log rescaling, k=30": {"preprocessing": "log_rescale", "log_range": 30.0},
        "no second-order terms": {"second_order": False},
    },
)
