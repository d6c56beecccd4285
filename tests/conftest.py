"""Shared test helpers: run a test on every kernel variant this machine has."""

import pytest

from exaone_cpu import _core


def run_on(isa_name, fn, *args, **kwargs):
    """fn(*args, **kwargs) with the kernels of isa_name, restoring the previous choice after."""
    before = _core.isa()
    _core.set_isa(isa_name)
    try:
        return fn(*args, **kwargs)
    finally:
        _core.set_isa(before)


@pytest.fixture(params=_core.available_isas())
def isa(request):
    """Each test using it runs once per ISA this machine can run (scalar included)."""
    before = _core.isa()
    _core.set_isa(request.param)
    yield request.param
    _core.set_isa(before)
