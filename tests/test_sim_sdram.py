"""The whole accelerator with its weights in SDRAM: the core, the SDRAM weight store with its
read-ahead, LiteDRAM's controller (generated from the pinned PyPI packages) and the
timing-checked MT48LC16M16A2 chip model (built with FATAL = 1: a datasheet violation ends
the simulator), Verilated, driven by the host driver through the framed link.

- The shipped model's greedy tokens, every layer's output vector compared with the golden
  model's, for 2-bit and 1.6-bit (base 3) packing.
- Streaming efficiency over whole tokens (cycle counts are deterministic): the SDRAM's data
  bus carries a beat in >= 96 % of a token's cycles, what the controller streams in
  isolation (tests/test_sdram_controller.py), so the core loses nothing beyond the
  controller's refreshes and row changes; the weight stream restarts only until the
  read-ahead has learned the jump from a token's end to the next token's start.
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

from test_sim_core import _lockstep  # noqa: E402

from mmfree_fpga import commands as C  # noqa: E402
from mmfree_fpga import numerics as N  # noqa: E402
from mmfree_fpga.compiler import SIM, compile_model  # noqa: E402
from mmfree_fpga.core_config import CoreConfig, SdramConfig  # noqa: E402
from mmfree_fpga.driver.backend import AcceleratorBackend  # noqa: E402
from mmfree_fpga.driver.core import CoreDriver, MemoryNotReady  # noqa: E402
from mmfree_fpga.driver.simulator import open_simulator  # noqa: E402
from mmfree_fpga.golden import GoldenModel  # noqa: E402

TOKENS = 32 if os.environ.get("MMFREE_SIM_LONG") == "1" else 4


LONG = os.environ.get("MMFREE_SIM_LONG") == "1"
#: (packing, words on chip, embedding in SDRAM)
CASES = [(0, 0, True), (1, 16384, False)] + ([(1, 0, True), (0, 8192, True)] if LONG else [])


@pytest.mark.parametrize("packing,onchip,embed_in_sdram", CASES, ids=[
    f"{'base3' if p else '2bit'}-onchip{o}-embed{'sdram' if e else 'bram'}"
    for p, o, e in CASES])
def test_shipped_model_through_sdram(packing, onchip, embed_in_sdram):
    """All weights and the embedding in SDRAM, the weights as 2-bit codes; 16,384 weight
    words and the embedding in block RAM, the rest of the weights in SDRAM as 1.6-bit
    (``make sim-long`` adds the other two combinations)."""
    sd = SdramConfig(packing=packing, onchip_words=onchip, embed_in_sdram=embed_in_sdram)
    golden = GoldenModel(SHIPPED)
    compiled = compile_model(golden, SIM, trace=True, onchip_words=onchip or None)
    with open_simulator(SIM, sdram=sd) as drv:
        ident = drv.identify()
        assert ident.memory == C.MemoryKind.SDRAM and ident.packing == packing
        assert ident.onchip_words == onchip
        assert ident.counter_names[-3:] == ("MEM_BEATS", "MEM_MISSES", "MEM_FULL")
        backend = AcceleratorBackend(drv, compiled, fresh=True)
        assert drv.identify().mem_status == C.MemoryStatus.READY
        # what the host wrote reads back the same through the packing and the read-ahead
        for a in (1000, onchip, 47_000):          # either side of the split
            got = drv.read(C.Space.WEIGHTS, a, 40)
            assert np.array_equal(got, compiled.weights[a:a + 40])
        got = drv.read(C.Space.EMBED, 5000, 50)     # the embedding, wherever it is
        assert np.array_equal(got, compiled.embed[5000:5050])
        tok = Tokenizer.from_str(golden.layout.tokenizer_json.decode())
        ids = tok.encode("It is a truth").ids[:2]
        drv.reset_counters()
        seq = _lockstep(backend, golden, ids, TOKENS)
        assert len(seq) == len(ids) + TOKENS
        c = drv.counters()
    steps = len(ids) - 1 + TOKENS
    assert c["TOKENS"] == steps
    # every token streams its SDRAM words once, each word its beats; the read-ahead past a
    # token's last word is the only extra, bounded by the prefetch FIFO
    beats = sd.beats_per_word(SIM.lanes)
    assert beats == (N.packed_word_beats(SIM.lanes) if packing else 16)
    if onchip:
        gen = compiled.weight_words_per_token()["sdram"]
        prompt = compiled.weight_words_per_token(generated=False)["sdram"]
        sdram_words = (len(ids) - 1) * prompt + TOKENS * gen
    else:
        sdram_words = c["ENGINE_BUSY"]
    assert c["MEM_BEATS"] >= sdram_words * beats
    assert c["MEM_BEATS"] <= sdram_words * beats + steps * sd.prefetch_words * beats
    # restarts of the weight stream: the cold start, then the read-ahead learns the jump
    # from the token's last SDRAM matrix back to its first (a prompt token ends before the
    # lm_head: when the lm_head streams from SDRAM, the first generated token teaches a
    # second jump, and its lm_head request is a miss too); after that every token's first
    # request finds its words prefetched
    lm_in_sdram = not onchip or compiled.weight_placement()["lm_head"] == "sdram"
    assert c["MEM_MISSES"] == (4 if lm_in_sdram else 2)
    efficiency = c["MEM_BEATS"] / c["CYCLES"]
    print(f"packing {packing}, {onchip} words on chip: {c['CYCLES'] / steps:,.0f} "
          f"cycles/token, data bus busy {efficiency:.2%}")
    # all in SDRAM: what the controller streams in isolation; with block RAM beside it,
    # the engine runs on-chip words while the FIFO is full, so the bus pauses then
    assert efficiency >= (0.96 if not onchip else 0.90)


def test_failed_power_up_check_is_refused():
    """A data bit that reads back inverted: the controller's power-up check fails,
    IDENTIFY says ERROR, and the host refuses the device with one message naming it."""
    from mmfree_fpga.driver.simulator import SIM_HEARTBEAT
    from mmfree_fpga.driver.transport import SubprocessTransport
    from mmfree_fpga.link.framed import FramedTransport
    from mmfree_hw.sdram.sim_board import ChipModelBoard
    from mmfree_hw.top import LinkedAccelerator
    from mmfree_hw.verilator.build import build

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
