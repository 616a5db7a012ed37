"""The whole accelerator with its weights in SDRAM: the core, the SDRAM weight store with its
read-ahead, LiteDRAM's controller (generated from the pinned PyPI packages) and the
timing-checked MT48LC16M16A2 chip model (built with FATAL = 1: a datasheet violation ends
the simulator), Verilated, driven by the host driver through the framed link.

- The shipped model's greedy tokens, every layer's output vector compared with the golden
  model's, for 2-bit and 1.6-bit (base 3) packing.
- Streaming efficiency over whole tokens (cycle counts are deterministic): the SDRAM's data
  bus carries a beat in >= 96 % of a token's cycles, what the controller streams in
  isolation (tests/test_sdram_controller.py), so the core loses nothing beyond the
  controller's refreshes and row changes; one restart of the weight stream per token.
- A memory that fails its power-up check (a data bit inverted on the board) is reported by
  IDENTIFY and refused by the host with one message, before anything is written.

``MMFREE_SIM_LONG=1`` (``make sim-long``) runs 32 tokens.
"""

import os

import numpy as np
import pytest
from sim_device import SHIPPED, require_verilator
from tokenizers import Tokenizer

require_verilator()
pytest.importorskip("litedram")

from mmfree_fpga import commands as C  # noqa: E402
from mmfree_fpga import numerics as N  # noqa: E402
from mmfree_fpga.compiler import SIM, compile_model  # noqa: E402
from mmfree_fpga.core_config import CoreConfig, SdramConfig  # noqa: E402
from mmfree_fpga.driver.backend import AcceleratorBackend  # noqa: E402
from mmfree_fpga.driver.core import CoreDriver, MemoryNotReady  # noqa: E402
from mmfree_fpga.driver.simulator import open_simulator  # noqa: E402
from mmfree_fpga.golden import GoldenModel  # noqa: E402
from test_sim_core import _lockstep  # noqa: E402

TOKENS = 32 if os.environ.get("MMFREE_SIM_LONG") == "1" else 4


@pytest.mark.parametrize("packing", [0, 1], ids=["2bit", "base3"])
def test_shipped_model_through_sdram(packing):
    sd = SdramConfig(packing=packing)
    golden = GoldenModel(SHIPPED)
    compiled = compile_model(golden, SIM, trace=True)
    with open_simulator(SIM, sdram=sd) as drv:
        ident = drv.identify()
        assert ident.memory == C.MemoryKind.SDRAM and ident.packing == packing
        assert ident.counter_names[-3:] == ("MEM_BEATS", "MEM_MISSES", "MEM_FULL")
        backend = AcceleratorBackend(drv, compiled, fresh=True)
        assert drv.identify().mem_status == C.MemoryStatus.READY
        # what the host wrote reads back the same through the packing and the read-ahead
        got = drv.read(C.Space.WEIGHTS, 1000, 40)
        assert np.array_equal(got, compiled.weights[1000:1040])
        tok = Tokenizer.from_str(golden.layout.tokenizer_json.decode())
        ids = tok.encode("It is a truth").ids[:2]
        drv.reset_counters()
        seq = _lockstep(backend, golden, ids, TOKENS)
        assert len(seq) == len(ids) + TOKENS
        c = drv.counters()
    steps = len(ids) - 1 + TOKENS
    assert c["TOKENS"] == steps
    # every token streams its words once, each word its beats; the read-ahead past a
    # token's last word is the only extra, bounded by the prefetch FIFO
    beats = sd.beats_per_word(SIM.lanes)
    assert beats == (N.packed_word_beats(SIM.lanes) if packing else 16)
    assert c["MEM_BEATS"] >= c["ENGINE_BUSY"] * beats
    assert c["MEM_BEATS"] <= c["ENGINE_BUSY"] * beats + steps * sd.prefetch_words * beats
    # one restart per token: the lm_head (or a prompt token's last down_proj) jumps back
    assert c["MEM_MISSES"] == steps
    efficiency = c["MEM_BEATS"] / c["CYCLES"]
    print(f"packing {packing}: {c['CYCLES'] / steps:,.0f} cycles/token, data bus busy "
          f"{efficiency:.2%}")
    assert efficiency >= 0.96


def test_failed_power_up_check_is_refused():
    """A data bit that reads back inverted: the controller's power-up check fails,
    IDENTIFY says ERROR, and the host refuses the device with one message naming it."""
    from mmfree_hw.sdram.sim_board import ChipModelBoard
    from mmfree_hw.top import LinkedAccelerator
    from mmfree_hw.verilator.build import build

    from mmfree_fpga.driver.simulator import SIM_HEARTBEAT
    from mmfree_fpga.driver.transport import SubprocessTransport
    from mmfree_fpga.link.framed import FramedTransport

    small = CoreConfig(lanes=16, weight_words=256, param_words=256, embed_words=1024,
                       scratch_words=256, program_words=64, max_d=64, max_n=64,
                       max_inter=64, max_layers=2, max_vocab=64, max_topk=4)
    sd = SdramConfig()
    top = ChipModelBoard(LinkedAccelerator(small, sdram=sd, heartbeat=SIM_HEARTBEAT),
                         sd.clock_hz, dq_fault=0x0100)
    binary = build(top, "accelerator", sources=top.verilog_sources())
    raw = SubprocessTransport([binary], timeout=60.0)
    with CoreDriver(FramedTransport(raw, lanes=small.lanes)) as drv:
        with pytest.raises(MemoryNotReady, match="its SDRAM failed"):
            drv.wait_memory()
        assert drv.identify().mem_status & C.MemoryStatus.ERROR
        # the link and the command processor still answer: only the memory is refused
        assert drv.counters()["TOKENS"] == 0
