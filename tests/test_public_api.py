"""The curated public face: every exported name resolves, and every example in its docstrings runs."""

import doctest

import l2lgd


def test_every_public_name_resolves():
    for name in l2lgd.__all__:
        assert getattr(l2lgd, name) is not None, name
    assert l2lgd.__version__.count(".") == 2


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
