"""The pure meta-training step: the state a run carries and how it starts (`_state`), one
meta-step and a jitted chunk of many (`_step`). No side effects: the driver is in `runs/`.
"""
