import pytest
import torch

from mmfree_fpga.model import HGRNBitForCausalLM
from util import tiny_config


@pytest.fixture
def tiny_model() -> HGRNBitForCausalLM:
    """A random model whose lower bounds and gains are not at their init values."""
    torch.manual_seed(0)
    m = HGRNBitForCausalLM(tiny_config())
    with torch.no_grad():
        m.model.lower_bounds.normal_(0, 1)
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return m.eval()


@pytest.fixture(scope="module")
def device():
    """A driver for a fresh simulated accelerator of the SIM configuration (tests that use it
    call ``sim_device.require_verilator()`` at module level)."""
    from mmfree_fpga.core_config import SIM
    from mmfree_fpga.driver.simulator import open_simulator

    drv = open_simulator(SIM)     # the build is cached: only the first module waits for it
    yield drv
    drv.close()
