import pytest

import l2lgd


def test_json_round_trip():
    config = l2lgd.Config(name="x", preprocessing="log_rescale", log_range=30.0, batch_size=4)
    assert l2lgd.Config.from_dict(config.to_dict()) == config
    hash(config)  # usable as a static jit argument


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("meta_steps", 0, ["meta_steps", "positive integer", "0"]),
        ("batch_size", -3, ["batch_size", "positive integer", "-3"]),
        ("log_range", 0.0, ["log_range", "positive number"]),
        ("log_range", -15.0, ["log_range", "-15.0"]),
        ("objective", "mean", ["objective", "'mean'", "'sum'", "'end'", "'end_log'"]),
        ("preprocessing", "log", ["preprocessing", "'log'", "'identity'", "'log_rescale'"]),
        ("second_order", 1, ["second_order", "True or False"]),
        ("meta_lr", float("inf"), ["meta_lr", "finite", "inf"]),
        ("clip_norm", float("nan"), ["clip_norm", "finite"]),
        ("seed", 2**32, ["seed", "[0, 2**32)", "4294967296"]),
        ("seed", -1, ["seed", "-1"]),
        ("name", "../../x", ["name", "'../../x'", "folder"]),
        ("name", "a/b", ["name", "'a/b'"]),
        ("dataset", "mnist", ["dataset", "'mnist'", "'digits'", "'wine'"]),
    ],
)
def test_invalid_values_name_the_field_and_allowed_values(field, value, words):
    with pytest.raises(ValueError) as info:
        l2lgd.Config(**{field: value})
    for word in words:
        assert word in str(info.value)


def test_unknown_fields_are_named():
    with pytest.raises(ValueError, match="'lr'.*known fields"):
        l2lgd.Config.from_dict({"lr": 0.1})
    with pytest.raises(ValueError, match="'steps'"):
        l2lgd.Config().replace(steps=3)


def test_configs_stored_with_the_old_field_names_still_load():
    # The shipped paper_digits stores hidden_units, activation, min_log_gradient, per_problem_clip.
    import json
    from pathlib import Path

    stored = json.loads((Path(__file__).parents[1] / "checkpoints" / "paper_digits" / "config.json").read_text())
    assert {"hidden_units", "activation", "min_log_gradient", "per_problem_clip"} <= set(stored)
    config = l2lgd.Config.from_dict(stored)
    assert (config.mlp_hidden_units, config.mlp_activation, config.log_range, config.per_task_clip) == (
        tuple(stored["hidden_units"]), stored["activation"], stored["min_log_gradient"], stored["per_problem_clip"])
    assert l2lgd.Config.from_dict(json.loads(config.to_json())) == config  # written back in today's names
    with pytest.raises(ValueError, match="'hidden_units' is now 'mlp_hidden_units'"):
        l2lgd.Config().replace(hidden_units=(4,))


def test_changed_fields_ignores_step_count():
    a = l2lgd.Config()
    assert a.changed_fields(a.replace(meta_steps=7)) == []
    assert a.changed_fields(a.replace(seed=3, hidden_size=8)) == ["hidden_size", "seed"]


def test_truncation_fields():
    config = l2lgd.Config(num_steps=20, horizon=100)
    assert config.steps_per_task == 100 and config.truncations == 5
    assert l2lgd.Config(num_steps=20).truncations == 1
    with pytest.raises(ValueError, match="horizon=50 must be a multiple of num_steps=20"):
        l2lgd.Config(num_steps=20, horizon=50)
    with pytest.raises(ValueError, match="mlp_hidden_units"):
        l2lgd.Config(mlp_hidden_units=(20, 0))
    with pytest.raises(ValueError, match="'tanh'"):
        l2lgd.Config(mlp_activation="tanh")
    config = l2lgd.Config(task="digits", mlp_hidden_units=(40, 20))
    assert l2lgd.Config.from_dict(__import__("json").loads(config.to_json())) == config  # tuples survive JSON


def test_sections_group_the_fields_and_each_is_validated():
    config = l2lgd.Config(hidden_size=4, dim=3, meta_steps=10)
    assert config.optimizer == l2lgd.OptimizerConfig(hidden_size=4)
    assert config.tasks == l2lgd.TaskConfig(dim=3)
    assert config.training == l2lgd.MetaTrainingConfig(meta_steps=10)
    assert (config.hidden_size, config.dim, config.meta_steps) == (4, 3, 10)  # flat reads
    # Built from sections, or sections and fields together: the same config.
    assert l2lgd.Config(optimizer=l2lgd.OptimizerConfig(hidden_size=4), dim=3, meta_steps=10) == config
    assert config.replace(optimizer=l2lgd.OptimizerConfig(hidden_size=8)).hidden_size == 8
    assert config.replace(training=config.training, num_layers=3).optimizer.num_layers == 3
    # Stored flat, with every field by its name: a stored config round-trips.
    # (Fields added after 0.3 are left out at their defaults, so old stored configs stay byte-identical.)
    from l2lgd._config import NEW_FIELDS

    assert set(config.to_dict()) == {"name", "seed"} | {f for s in (config.optimizer, config.tasks, config.training)
                                                          for f in s.__dataclass_fields__} - set(NEW_FIELDS)
    assert l2lgd.Config.from_dict(config.to_dict()) == config
    evolution = config.replace(estimator="pes", perturbations=3)
    assert {"estimator", "perturbations"} <= set(evolution.to_dict()) and "sigma" not in evolution.to_dict()
    assert l2lgd.Config.from_dict(evolution.to_dict()) == evolution
    assert evolution.changed_fields(config) == ["estimator", "perturbations"]  # fields stored or not
    with pytest.raises(ValueError, match="Config.hidden_size must be a positive integer"):
        l2lgd.OptimizerConfig(hidden_size=0)
    with pytest.raises(TypeError, match="Config.optimizer must be an instance of OptimizerConfig, got TaskConfig"):
        l2lgd.Config(optimizer=l2lgd.TaskConfig())
    with pytest.raises(AttributeError, match="no attribute 'hidden'"):
        config.hidden
    assert hash(config) == hash(l2lgd.Config(hidden_size=4, dim=3, meta_steps=10))  # a static jit argument
