# l2lgd: every target bootstraps .venv from pyproject.toml on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

EXP ?= log30
SEED ?=
SEEDS ?=
STEPS ?=
OUT ?=
OPT ?=

TRAIN_ARGS = $(if $(SEED),--seed $(SEED)) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(STEPS),--steps $(STEPS)) $(if $(OUT),--out "$(OUT)")

.PHONY: install train test eval figures bench reproduce paper suite clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m l2lgd train $(EXP) $(TRAIN_ARGS) $(ARGS)

eval: $(STAMP)
	$(PY) -m l2lgd eval $(EXP) $(if $(OUT),--out "$(OUT)") $(ARGS)

figures: $(STAMP)
	$(PY) -m l2lgd figures $(EXP) $(if $(OUT),--out "$(OUT)") $(ARGS)

reproduce: $(STAMP)
	$(PY) -m l2lgd reproduce $(ARGS)

paper: $(STAMP)
	$(PY) -m l2lgd paper $(ARGS)

suite: $(STAMP)
	@test -n "$(OPT)" || { echo "usage: make suite OPT=NAME|RUN_DIR|OPTAX_SPEC [ARGS='--tasks heldout --quick'] (e.g. OPT=general, OPT=adam:1e-3); the first run computes the tuned baselines of every task (about 45 minutes on 2 cores, cached after; --quick: a few minutes)" >&2; exit 2; }
	$(PY) -m l2lgd suite $(OPT) $(if $(OUT),--out "$(OUT)") $(ARGS)

bench: $(STAMP)
	$(PY) -m l2lgd bench $(EXP) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15 tests $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
