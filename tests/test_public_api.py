"""The curated public face: every exported name resolves, and the package docstring's example runs."""

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
