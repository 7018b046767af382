import pytest

from decaf import cpu


@pytest.fixture(params=cpu.ISAS)
def isa(request):
    """Each kernel variant in turn (skipped when this CPU lacks it), then back to the one before."""
    name = request.param
    if name not in cpu.supported_isas():
        pytest.skip(f"this CPU ({cpu.cpu_model()}) does not run the {name} kernels")
    before = cpu.get_isa()
    cpu.set_isa(name)
    yield name
    cpu.set_isa(before)
