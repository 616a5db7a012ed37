"""The simulator's clock gating of idle units (``mmfree_hw.gating``) changes nothing a host
can see: the gated and the ungated Verilated accelerator (``gate_idle`` True and False, the
bare command stream) answer the same commands with the same bytes, cycle counters
included. The stream covers what the gated units do: the upload (the command processor),
the STATE memory through the host port (the MLGRU's), prompt tokens and generated tokens
with 64 candidates (every unit, the top-k included), a sequence reset and a second
sequence."""

from pathlib import Path

import numpy as np
from sim_device import SHIPPED, require_verilator

from mmfree_fpga.compiler import compile_model
from mmfree_fpga.core_config import SIM
from mmfree_fpga.driver.backend import AcceleratorBackend
from mmfree_fpga.driver.core import CoreDriver
from mmfree_fpga.driver.simulator import simulator_binary
from mmfree_fpga.driver.transport import SubprocessTransport, Transport
from mmfree_fpga.isa import Space

require_verilator()


class Tape(Transport):
    """Keeps every byte the device answered."""

    def __init__(self, inner: Transport):
        self.inner, self.replies = inner, bytearray()

    def write(self, data):
        self.inner.write(data)

    def read(self, n):
        data = self.inner.read(n)
        self.replies += data
        return data

    def close(self):
        self.inner.close()


def session(gate_idle: bool) -> tuple[bytes, list[int], np.ndarray]:
    tape = Tape(SubprocessTransport([simulator_binary(SIM, framed=False, gate_idle=gate_idle)],
                                    timeout=600.0))
    drv = CoreDriver(tape)
    compiled = compile_model(Path(SHIPPED), SIM)
    backend = AcceleratorBackend(drv, compiled, topk=64, fresh=True)
    try:
        tokens = []
        for prompt in ([1, 450, 1260], [1, 29, 7, 3000]):
            backend.reset()
            logits = backend.prefill(prompt)
            tokens.append(int(np.argmax(logits)))
            for _ in range(6):
                tokens.append(int(np.argmax(backend.step(tokens[-1]))))
        state = drv.read(Space.STATE, 0, 64)
        drv.write(Space.STATE, 0, state[::-1].copy())
        backend.reset()
        tokens.append(int(np.argmax(backend.prefill([5, 6]))))
        state_after = drv.read(Space.STATE, 0, 64)
        counters = drv.counters()
        assert counters["TOKENS"] > 0
        return bytes(tape.replies), tokens, state_after
    finally:
        backend.close()


def test_gated_simulator_answers_as_the_ungated_one():
    gated, tokens, state = session(True)
    plain, tokens_plain, state_plain = session(False)
    assert tokens == tokens_plain
    assert np.array_equal(state, state_plain)
    assert len(gated) == len(plain) > 3_000
    first = next((i for i, (a, b) in enumerate(zip(gated, plain, strict=True)) if a != b), None)
    assert first is None, f"the replies differ from byte {first} on"
