"""Meta-training runs on disk: the driver (`_driver`), its run lock and signals (`_control`),
snapshots (`_snapshots`), the record of final losses (`_record`), exported optimizers and their
exporting (`_exports`) and loading (`_loading`), model selection (`_selection`), the shipped optimizers found by name
(`_shipped`) and shipping into them (`_ship`), and experiment files (`_experiments`).
"""
