"""`paper_quadratic`: the paper's 10-D quadratic task (arXiv 1606.04474, section 3.1).

    make train EXP=paper_quadratic

f(θ) = ||Wθ - y||^2 with W (10 x 10) and y (10) drawn from N(0, 1) per task, θ0 ~ N(0, 0.01^2);
an optimizee horizon of 100 steps, meta-gradients from truncated unrolls of 20 steps that carry
the LSTM state and θ from one truncation to the next; the paper's preprocessing (p = 10) and
output scale 0.1, meta-objective the sum of the unroll's losses, second-order terms dropped
(as the paper does). Batch of 16 tasks, each task's meta-gradient clipped to norm 1;
20,000 meta-steps (4,000 batches of tasks run to the horizon), a few minutes on one core.
"""

from l2lgd import Config, Experiment

EXPERIMENT = Experiment(
    config=Config(
        name="paper_quadratic",
        task="paper_quadratic",
        dim=10,
        num_steps=20,
        horizon=100,
        preprocessing="paper",
        log_range=10.0,
        output_scale=0.1,
        objective="sum",
        second_order=False,
        batch_size=16,
        per_task_clip=True,
        meta_lr=1e-3,
        meta_steps=20_000,
    ),
    checkpoint_every=1_000,
    validation_tasks=256,
    eval_tasks=2_000,
    rolling_window=500,
)
