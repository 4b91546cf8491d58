"""The curated public face: every exported name resolves, and every example in its docstrings runs."""

import doctest
import importlib
import inspect

import l2lgd


def test_all_is_the_export_table():
    assert len(l2lgd.__all__) == len(set(l2lgd.__all__))
    assert set(l2lgd.__all__) == set(l2lgd._WHERE) | {"__version__"}
    assert l2lgd.__version__.count(".") == 2


def test_every_public_name_resolves_to_what_its_module_defines():
    """Each name is the object of the module the table names; classes and functions are l2lgd's
    own, under their own name (an alias or a re-exported foreign object would fail), classes
    capitalized and functions not; the rest are upper-case integer constants."""
    for name in sorted(l2lgd._WHERE):
        obj = getattr(l2lgd, name)
        module = importlib.import_module(f"l2lgd.{l2lgd._WHERE[name].lstrip('.')}")
        assert obj is getattr(module, name), name
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.startswith("l2lgd."), (name, obj.__module__)
            assert obj.__name__ == name, (name, obj.__name__)
            assert name[0].isupper() == inspect.isclass(obj), name
        else:
            assert name.isupper() and type(obj) is int, (name, obj)


def test_an_unknown_name_is_an_attribute_error():
    try:
        l2lgd.no_such_thing
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected an AttributeError")


def test_the_package_docstring_example_runs():
    result = doctest.testmod(l2lgd, verbose=False)
    assert result.attempted >= 2 and result.failed == 0


def test_every_example_in_the_public_docstrings_runs():
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    from l2lgd.optimizers import _preprocessing

    finder, runner = doctest.DocTestFinder(recurse=False), doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    registered = dict(_preprocessing.PREPROCESSINGS)
    tried = []
    try:
        for name in l2lgd.__all__:
            obj = getattr(l2lgd, name)
            if not callable(obj):
                continue
            globs = {"l2lgd": l2lgd, "jax": jax, "jnp": jnp, "optax": optax, "eqx": eqx}
            for test in finder.find(obj, name, globs=globs):
                if test.examples:
                    tried.append(name)
                    runner.run(test)
    finally:  # the register_preprocessing example registers one
        _preprocessing.PREPROCESSINGS.clear()
        _preprocessing.PREPROCESSINGS.update(registered)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed (above)"
    assert {"train", "load_optimizer", "TaskFamily", "make_meta_gradient", "register_preprocessing"} <= set(tried)
