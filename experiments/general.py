"""`general`: one learned optimizer for problems it never saw, meta-trained on the suite's `train`
families only (12 families of 8 kinds: MLPs with tanh, sigmoid, ReLU and GELU units on four data
sets, a convnet, an autoencoder, linear and logistic regression, conditioned quadratics,
Rosenbrock, an RNN) and judged on the 12 `heldout` families (`make suite OPT=general`).

    make train EXP=general                 # the full budget (see the model card for the time)
    make suite OPT=general                 # the held-out suite: ratios to tuned baselines
    python -m l2lgd ablate general         # what mattered, at a fraction of the budget

- The optimizer: the coordinate-wise LSTM of the project, one layer of 4 units (its update on a
  1M-coordinate pytree must stay cheap), on the `adaptive` preprocessing: Adam's statistics at
  four timescales (momenta at decays 0.5, 0.9, 0.99 and 0.999 and the gradient, each divided by
  sqrt(v_hat)), the agreement of the gradient with the previous momentum, and a log step size
  that every coordinate carries from step to step (from 3e-3, moved by the LSTM by up to e^0.1
  per step within [1e-6, 1], leaking back at 1% per step), as Rprop carries its step sizes; it
  outputs a direction correction, that carried step size's change and an offset of at most e^2
  either way for the current step. No step-count clocks: a horizon 5 times longer than any in
  meta-training shows the network no unseen input.
- The estimator: PES (persistent evolution strategies) over truncations of 20 steps of tasks
  whose horizons are drawn log-uniformly from 100 to 2,000 steps, 4 antithetic pairs per task, one
  task of every family per meta-step (12 tasks).
- The meta-objective: the log loss summed over every step (losses below 1e-8 count as 1e-8, so that
  no family that can be memorized outweighs the rest), each step's loss taken on a minibatch
  other than the one its gradient saw (`heldout_minibatch`), so that it does not learn to overfit.
- Model selection: every snapshot scored on 4 validation tasks of each `train` family at its
  own horizon (the mean log10 final loss); no held-out family is seen.

Measured: `make train EXP=general` 12,000 meta-steps (two segments,
stopped by SIGTERM at 4,000 when `meta_steps` was lowered from 16,000, and resumed), exported
meta-step 10,000 (validation -1.80). On the held-out suite: median ratio 53.5 to the best tuned
baseline (tuned Adam 4.7, Adam at the suite-wide rate 0.96), below tuned Adam on 2 of 12 tasks, no
non-finite run (`experiments/SUITE.md`; at 5x the horizons: `experiments/SUITE_5X.md`). The design
was chosen on the train split: the first `general` (preprocessing `general`, a step size set afresh
at each step, at most 0.16) lost to tuned Adam by 5.7x to 2e6x on the train families that want rates
of 0.1-0.3; at 2,000 meta-steps the carried step size scored -1.83 against -1.55 on the train
families' test tasks. The first 1,200-step exploration of the first design used `sum_log`: GELU on
wine (a memorizable family, loss to 1e-21) then dominated the objective and the validation mean,
hence the floor.

Tried and not adopted (chosen on the train split alone): task augmentation, every tensor of every
meta-training task rescaled by a log-uniform factor in [0.1, 10] (`reparam_scale=10`, so that no
learning rate can be baked in), trained by `make train EXP=general` with `reparam_scale=10.0` in this
config (the same run as `ARGS="--set reparam_scale=10"`; 12,000 meta-steps): validation -1.69, -0.83, -1.03, -0.81, -1.18, -1.28 at 2k..12k (best -1.69
against the shipped run's -1.80); on the train families' test tasks (`suite runs/general --tasks
train --baselines adam`) median ratio to tuned Adam 1.17 (shipped: 1.16), below it on 2 of 12
(shipped: 4). So the shipped config stays without it; it is an ablation.
"""

from l2lgd import Config, Experiment
from l2lgd.suite import training_mixture

EXPERIMENT = Experiment(
    config=Config(
        name="general",
        preprocessing="adaptive",
        hidden_size=4,
        num_layers=1,
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
        meta_lr=3e-3,
        meta_steps=12_000,
    ),
    family=training_mixture("train"),
    validation_family=training_mixture("validation"),
    checkpoint_every=2_000,
    validation_tasks=4,
    eval_tasks=16,
    rolling_window=500,
    ablations={
        "truncated ES instead of PES": {"estimator": "es"},
        "horizons of 200 steps only": {"min_horizon": 200, "max_horizon": 200},
        "step size set afresh at each step (general's first design)": {"preprocessing": "general"},
        "objective on the training minibatch": {"heldout_minibatch": False},
        "tasks rescaled per tensor (reparam_scale=10)": {"reparam_scale": 10.0},
    },
    ablation_base={"meta_steps": 2_000},
)
