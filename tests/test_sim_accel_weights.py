"""The host's WEIGHTS access on the Verilated accelerator (``top.Accelerator``): the command
processor's WEIGHTS port is served by the weight store (``weights.WeightMemory`` with its
host read path), not by the core. Words written read back the same, before and after a
token ran (the store's request path and the host path share its read port), and a READ
past the end is refused by the processor."""

import numpy as np
import pytest
from sim_device import SHIPPED, require_verilator

from mmfree_fpga import commands as C
from mmfree_fpga.compiler import SIM, compile_model
from mmfree_fpga.driver.backend import AcceleratorBackend
from mmfree_fpga.driver.core import CoreError
from mmfree_fpga.golden import GoldenModel
from mmfree_fpga.isa import Space

require_verilator()




def test_weights_read_back_around_a_run(device):
    golden = GoldenModel(SHIPPED)
    compiled = compile_model(golden, SIM)
    backend = AcceleratorBackend(device, compiled)      # writes every image
    image = np.asarray(compiled.images()[Space.WEIGHTS], dtype=np.uint8)
    n = len(image)
    picks = [0, 1, 2, n // 2, n - 2, n - 1]
    for a in picks:
        assert np.array_equal(device.read(Space.WEIGHTS, a, 1)[0], image[a]), a
    assert np.array_equal(device.read(Space.WEIGHTS, 0, 64), image[:64])
    r = device.run([5], 8)                               # the store serves the engine
    assert len(r.ids) == 8
    assert np.array_equal(device.read(Space.WEIGHTS, n - 64, 64), image[n - 64:])
    # words past the model, to the last address of the space, then a READ past the end
    rng = np.random.default_rng(11)
    size = SIM.size(Space.WEIGHTS)
    extra = rng.integers(0, 256, (16, C.word_bytes(Space.WEIGHTS, SIM.lanes)), dtype=np.uint8)
    device.write(Space.WEIGHTS, size - 16, extra)
    assert np.array_equal(device.read(Space.WEIGHTS, size - 16, 16), extra)
    with pytest.raises(CoreError):
        device.read(Space.WEIGHTS, size - 1, 2)
    assert np.array_equal(device.read(Space.WEIGHTS, size - 1, 1), extra[-1:])
    del backend
