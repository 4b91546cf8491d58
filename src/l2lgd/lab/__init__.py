"""The lab: what the command line does with the library (reproduction, `make eval`, the paper
report, ablations, figures, benchmarks). Not part of the public API: these modules write
reports and figures, and may change with the experiments they serve.

- `compare`: a trained optimizer against the reference's and tuned optax baselines (`make eval`);
- `report`: `make reproduce`, the ablations and the process runner behind `SEEDS=N`;
- `paper`: `make paper`, the paper's tasks and the generalization tables;
- `figures`: the reference's plots;
- `bench`: `make bench`.
"""
