"""The host's side of IDENTIFY's memory status (driver/core.py ``wait_memory``, used before
any upload): an SDRAM still initializing is waited for, a failed one is refused with one
message and nothing written, one that never ends its init times out. A scripted core
answers IDENTIFY only (anything else it receives fails the test)."""

import pytest

from mmfree_fpga import commands as C
from mmfree_fpga.core_config import CoreConfig
from mmfree_fpga.driver.core import CoreDriver, MemoryNotReady
from mmfree_fpga.driver.transport import Transport

CFG = CoreConfig(lanes=16, weight_words=256, param_words=256, embed_words=1024,
                 scratch_words=256, program_words=64, max_d=64, max_n=64, max_inter=64,
                 max_layers=2, max_vocab=64, max_topk=4)


class ScriptedCore(Transport):
    """Answers the n-th IDENTIFY with ``statuses[min(n, last)]``."""

    def __init__(self, statuses):
        self.statuses, self.n, self.out = list(statuses), 0, b""
        self.written = []

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))
        assert data == C.encode_identify(), "only IDENTIFY may be sent"
        st = self.statuses[min(self.n, len(self.statuses) - 1)]
        self.n += 1
        self.out += C.identify_reply(CFG, memory=C.MemoryKind.SDRAM, mem_status=st)

    def read(self, n: int) -> bytes:
        data, self.out = self.out[:n], self.out[n:]
        assert len(data) == n
        return data


def test_waits_while_initializing():
    init = C.MemoryStatus.INITIALIZING
    core = ScriptedCore([init, init, init, C.MemoryStatus.READY])
    ident = CoreDriver(core).wait_memory()
    assert ident.mem_status == C.MemoryStatus.READY and core.n == 4


def test_a_failed_memory_is_refused_with_one_message():
    core = ScriptedCore([C.MemoryStatus.INITIALIZING, C.MemoryStatus.ERROR])
    with pytest.raises(MemoryNotReady) as e:
        CoreDriver(core).wait_memory()
    assert str(e.value).startswith("the device reports that its SDRAM failed: ")
    assert "\n" not in str(e.value)
    assert all(w == C.encode_identify() for w in core.written)    # nothing else was sent


def test_an_init_that_never_ends_times_out():
    core = ScriptedCore([C.MemoryStatus.INITIALIZING])
    with pytest.raises(MemoryNotReady, match="still initializing 0 s after"):
        CoreDriver(core).wait_memory(timeout_s=0.05)
