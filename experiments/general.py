"""`general`: one learned optimizer for problems it never saw, meta-trained on the suite's `train`
families only (13 families of 9 kinds: MLPs with tanh, sigmoid, ReLU and GELU units on five data
sets, a convnet, an autoencoder, linear and logistic regression, conditioned quadratics,
Rosenbrock, an RNN, a transformer language model), its snapshots and design chosen on the 11
`validation` families, and judged once on the 15 `heldout` families (`make suite OPT=general`).

    make train EXP=general                 # the full budget (see the model card for the time)
    make suite OPT=general                 # the held-out suite: ratios to tuned baselines and rivals
    python -m l2lgd ablate general         # what mattered, scored on the validation split

- The optimizer: `AdamController` (`kind="adam_controller"`), a learned controller over Adam:
  Adam's direction at a step size per tensor that a small MLP (16 tanh units) carries and
  steers from per-tensor statistics (log RMS of the gradient, of Adam's direction and of the
  normalized gradient, the cosine of the gradient with the momentum, the step size so far,
  log(1 + t) and the training fraction t / num_steps), moving it by at most e^0.1 a step within
  [1e-6, 10] (`max_lr`); plus a learned weight of the normalized gradient. It starts as Adam(1e-3). Its state
  is Adam's (8 bytes a coordinate); it needs the number of steps you will run
  (`l2lgd.load_optimizer("general", num_steps=N)`).
- The estimator: PES over truncations of 20 steps of tasks whose horizons are drawn
  log-uniformly from 100 to 2,000 steps, 4 antithetic pairs per task, one task of every family per
  meta-step; every tensor of every meta-training task rescaled by a log-uniform factor in
  [1e-2, 1e2] (`reparam_scale=100`), so that no learning rate can be baked in.
- The meta-objective: the log loss summed over every step (floored at 1e-8), each step's loss
  taken on a minibatch other than the one its gradient saw (`heldout_minibatch`).
- Model selection: every 1,000 meta-steps, scored on 4 tasks of each `validation` family at its
  own horizon (the mean log10 final loss); no held-out family is seen.

The design was chosen on the validation split (see the model card and README for the figures):
see `ablations` for what was compared.
"""

from l2lgd import Config, Experiment
from l2lgd.suite import training_mixture

EXPERIMENT = Experiment(
    config=Config(
        name="general",
        kind="adam_controller",
        preprocessing="adaptive",  # the LSTM's (its ablation below); the controller has none
        hidden_size=16,
        num_layers=1,
        max_lr=10.0,  # tuned Adam takes 0.3-1 on the regressions; a rescaled tensor wants up to 100x that
        estimator="pes",
        perturbations=4,
        sigma=0.01,
        num_steps=20,
        min_horizon=100,
        max_horizon=2_000,
        objective="sum_log_floored",
        heldout_minibatch=True,
        second_order=False,
        batch_size=1,
        meta_lr=1e-3,
        meta_steps=8_000,
        reparam_scale=100.0,
    ),
    family=training_mixture("train"),
    validation_family=training_mixture("validation"),
    checkpoint_every=1_000,
    validation_tasks=4,
    eval_tasks=16,
    rolling_window=500,
    ablations={
        "step size capped at 1 (the first controller)": {"max_lr": 1.0},
        "steps relative to the tensor's RMS (relative_steps)": {"relative_steps": True},
        "the Celo-like per-coordinate MLP (MLPStep) instead of the controller": {"kind": "mlp_step"},
        "the coordinate-wise LSTM on the adaptive preprocessing (the first general)": {"kind": "lstm", "hidden_size": 4},
        "meta-learning rate 3e-3": {"meta_lr": 3e-3},
        "tasks as they are (no rescaling)": {"reparam_scale": 1.0},
        "truncated ES instead of PES": {"estimator": "es"},
    },
    ablation_base={"meta_steps": 2_000},
)
