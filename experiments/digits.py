"""`digits`: a learned optimizer that beats tuned SGD, momentum, Nesterov, RMSProp and Adam on
the digits MLP (64 -> 20 sigmoid -> 10, cross-entropy, minibatches of 128, a fresh
initialization per task, horizon 100), and generalizes past it.

    make train EXP=digits
    make eval EXP=digits                        # 200 held-out tasks against the tuned baselines
    python -m l2lgd paper --section digits      # the generalization table -> experiments/REPORT.md
    python -m l2lgd ablate digits --tasks 200

The same coordinate-wise two-layer LSTM (20 units) as the paper; what changes, each a field:

- preprocessing="moments": the LSTM sees Adam's statistics instead of the raw gradient: the
  bias-corrected momenta at decays 0.5, 0.9 and 0.99 and the gradient, each divided by
  sqrt(v_hat) + eps (so nothing depends on the scale of the loss), and tanh(t / tau) of the step
  count for tau = 10, 30, 100 (so it can learn a schedule). It outputs a direction correction d
  and a log step size a: update = -exp(-2.3 + 3 tanh(a / 3)) * (adam_direction + d). With
  outputs of 0 it is Adam with learning rate 0.1; it learns to depart from Adam per coordinate.
- objective="sum_log": the mean log loss over every step of each truncated unroll, so every
  decade gained at every step counts.
- train_task="digits_variants": meta-training draws each task from a mixture around the target:
  one or two hidden layers (30% two), sigmoid or ReLU units (30% ReLU); about half the tasks are
  the plain digits MLP. Model selection and evaluation use `task="digits"` itself.
- 4 tasks per meta-step, truncated unrolls of 20 steps over the horizon of 100, first-order
  meta-gradients (as the paper), meta_lr 1e-3, 6,000 meta-steps, 64 validation tasks.

Measured (`make eval EXP=digits`, 200 held-out tasks): mean final training loss 0.0234 ± 0.0034
against 0.0524 ± 0.0044 for tuned Nesterov, the best baseline (0.45x, 95% CIs apart); but test-
split accuracy 95.5% against Nesterov's 97.3%: it overfits more. `make train EXP=digits`:
exported meta-step 5,500 (validation mean log10 final loss -1.80). Tried before
(each `python -m l2lgd train digits --set ... --out runs/try`): the same without the variants
mixture at 3,000 meta-steps (and before a never-seen coordinate's step was gated to 0): 0.0375 ±
0.0055 on test, but 2.99x the best baseline on 2 hidden layers; a 50/50 mixture selected on the
mixture's own validation: 0.0434 ± 0.0049 (CIs touching Nesterov's) and 0.88x on 2 layers.
Generalization and ablations: experiments/REPORT.md (section `digits`) and
experiments/ABLATIONS.md.
"""

from l2lgd import Config, Experiment

EXPERIMENT = Experiment(
    config=Config(
        name="digits",
        task="digits",
        train_task="digits_variants",
        num_steps=20,
        horizon=100,
        mlp_hidden_units=(20,),
        mlp_activation="sigmoid",
        minibatch=128,
        preprocessing="moments",
        objective="sum_log",
        second_order=False,
        batch_size=4,
        meta_lr=1e-3,
        meta_steps=6_000,
    ),
    checkpoint_every=500,
    validation_tasks=64,
    eval_tasks=200,
    rolling_window=500,
    ablations={
        "trained on digits only (no variants)": {"train_task": ""},
        "no step-count features": {"preprocessing": "moments_no_clock"},
        "the paper's preprocessing (p = 10)": {"preprocessing": "paper", "log_range": 10.0},
        "objective: sum of the losses": {"objective": "sum"},
    },
    # `python -m l2lgd ablate digits`: each variant at 2,000 meta-steps (a third of the training).
    ablation_base={"meta_steps": 2_000},
)
