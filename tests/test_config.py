import pytest

import l2lgd


def test_json_round_trip():
    config = l2lgd.Config(name="x", preprocessing="log_rescale", min_log_gradient=30.0, batch_size=4)
    assert l2lgd.Config.from_dict(config.to_dict()) == config
    hash(config)  # usable as a static jit argument


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("meta_steps", 0, ["meta_steps", "positive integer", "0"]),
        ("batch_size", -3, ["batch_size", "positive integer", "-3"]),
        ("min_log_gradient", 0.0, ["min_log_gradient", "positive number"]),
        ("min_log_gradient", -15.0, ["min_log_gradient", "-15.0"]),
        ("objective", "mean", ["objective", "'mean'", "'sum'", "'end'", "'end_log'"]),
        ("preprocessing", "log", ["preprocessing", "'log'", "'identity'", "'log_rescale'"]),
        ("second_order", 1, ["second_order", "True or False"]),
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


def test_changed_fields_ignores_step_count():
    a = l2lgd.Config()
    assert a.changed_fields(a.replace(meta_steps=7)) == []
    assert a.changed_fields(a.replace(seed=3, hidden_size=8)) == ["hidden_size", "seed"]
