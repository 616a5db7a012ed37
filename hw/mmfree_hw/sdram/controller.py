"""The SDR SDRAM controller: :class:`SdramController`, LiteDRAM's generated core
(:mod:`.litedram_gen`) with an init sequencer in Amaranth instead of LiteX's CPU and BIOS.

LiteDRAM leaves the chip's init to software: a CPU runs ``init_sequence()`` of the generated
``sdram_phy.h`` (the DFII in software control, each command written to CSRs), switches the
DFII back to hardware control and sets the core's ``init_done`` CSR. Here a state machine does
the same over the core's Wishbone control slave (``wb_ctrl``, 32 bits, one transaction at a
time), then checks the memory once through the native port before it lets the user in.
"""

from __future__ import annotations

import math
from pathlib import Path

from amaranth import Array, ClockSignal, Instance, Module, ResetSignal, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .litedram_gen import DFII_CONTROL_HARDWARE, GeneratedCore, generate

__all__ = ["SdramController", "pins_signature", "cmd_layout", "wdata_layout",
           "check_pattern"]


def cmd_layout(addr_bits: int = 24) -> data.StructLayout:
    """A native-port command: read (``we`` = 0) or write one word at word address ``addr``."""
    return data.StructLayout({"we": unsigned(1), "addr": unsigned(addr_bits)})


def wdata_layout(data_bits: int = 16) -> data.StructLayout:
    """A write's data and byte enables (``we`` bit b = 1: byte b is written)."""
    return data.StructLayout({"data": unsigned(data_bits), "we": unsigned(data_bits // 8)})


def pins_signature(addr_pins: int = 13, ba_pins: int = 2, data_bits: int = 16):
    """The SDRAM pins as the controller drives them (Out) and reads them (``dq_i``: In), with
    the data bus split (``dq_o``, ``dq_oe``, ``dq_i``): a board shell puts the tristate
    buffer on them, a simulation connects a chip model with a split bus. No clock pin."""
    return wiring.Signature({
        "cke": Out(1), "cs_n": Out(1), "ras_n": Out(1), "cas_n": Out(1), "we_n": Out(1),
        "ba": Out(ba_pins), "a": Out(addr_pins), "dm": Out(data_bits // 8),
        "dq_o": Out(data_bits), "dq_oe": Out(1), "dq_i": In(data_bits),
    })


def check_pattern(core: GeneratedCore) -> list[tuple[int, int]]:
    """The power-up check's ``(word address, value)`` pairs: every bank, rows and columns
    with each address bit both 0 and 1 somewhere, and values with each data bit both 0 and 1.
    All are written first, then read back in order: an address bit stuck or shorted makes
    two entries alias and the first read back wrong; a data bit stuck fails a pattern."""
    rb, cb, bb = core.rowbits, core.colbits, core.bankbits
    rmax, cmax = (1 << rb) - 1, (1 << cb) - 1
    rows_cols = [(0, 0), (rmax, cmax), (0x1555 & rmax, 0x0AA & cmax), (0x0AAA & rmax,
                 0x155 & cmax), (1, 1), (rmax - 1, cmax - 1), (1 << (rb - 1), 1 << (cb - 1)),
                 ((1 << (rb - 1)) - 1, (1 << (cb - 1)) - 1)]
    values = [0xFFFF, 0x0000, 0xA5A5, 0x5A5A, 0x0001, 0xFFFE, 0x8000, 0x7FFF]
    out = []
    for i, ((r, c), v) in enumerate(zip(rows_cols, values, strict=True)):
        b = i % (1 << bb)
        out.append(((r << (bb + cb)) | (b << cb) | c, v & 0xFFFF))
    return out


class SdramController(wiring.Component):
    """LiteDRAM's controller for the ULX3S's MT48LC16M16A2 (32 MB: 4 banks x 8192 rows x 512
    columns of 16 bits) with the 1:1 GENSDRPHY, generated at build time
    (:func:`.litedram_gen.generate`), plus an init sequencer and a power-up check.

    Parameters: ``sys_clk_freq`` (Hz, default 50e6: LiteDRAM derives the timings and the
    CAS latency from it: CL 2 up to 100 MHz, CL 3 above), ``refresh_postponing`` (LiteDRAM's:
    1 refreshes every tREFI, up to 8 lets it postpone that many and issue them back to back,
    which measured ~0.6 point more streaming efficiency), ``powerup_s`` (the wait before the
    first command, default 100 us, the datasheet's minimum; the chip model checks it),
    ``core`` (a :class:`~.litedram_gen.GeneratedCore` to use instead of generating one),
    ``cache_dir`` (the generator's cache).

    Ports:

    - ``cmd``: In stream of :func:`cmd_layout` (``we``: 1, ``addr``: :attr:`addr_bits` = 24,
      a word address of 16-bit words; LiteDRAM's ROW_BANK_COL mapping, so consecutive
      addresses run along a row: ``addr = row << 11 | bank << 9 | col``). ``ready`` is low
      until ``init_done`` (and forever after ``init_error``). Throughput: one command per
      cycle while they hit open rows; a row miss costs PRECHARGE + ACTIVE (tRP + tRCD, 2
      cycles at 50 MHz) in that bank, hidden when another bank has work; a refresh stalls all
      banks for ~tRP + tRFC every tREFI (7.8 us). Commands are executed in order per port
      (LiteDRAM's crossbar locks a port to a bank while it has commands pending there).
    - ``wdata``: In stream of :func:`wdata_layout` (``data``: 16, ``we``: 2 byte enables),
      one beat per write command, in command order. ``wdata.ready`` is LiteDRAM's: high in
      the cycle the write goes to the chip, at the earliest the cycle after the edge that
      accepted its command. LiteDRAM does not look at ``wdata.valid``: the beat must be
      valid by then (present it before its command, or at the latest from the cycle after
      the command was taken, as ``SdramWeightStore`` does: both tested), or the chip gets
      whatever ``wdata.payload`` holds; ``wdata_underrun`` records it.
    - ``wdata_underrun``: Out(1), sticky: LiteDRAM took a user write beat while
      ``wdata.valid`` was low (a bug of the user; 0 in every test here).
    - ``rdata``: Out stream of 16 bits, one beat per read command, in command order.
      LiteDRAM's native port has no read back-pressure: ``rdata.ready`` is ignored, and the
      consumer must accept a beat in every cycle ``valid`` is high (reserve room for every
      read in flight before issuing it). Latency, cmd accepted -> rdata valid (from the edge
      that accepts the command to the edge that ends the first cycle its data is valid on
      ``rdata``; on an idle controller in read mode; measured in
      tests/test_sdram_controller.py at 50 MHz and by hand at 100 and 133 MHz):
      :attr:`READ_LATENCY_HIT` = 6 cycles at 50 MHz for a row already open (CL + 4),
      :attr:`READ_LATENCY_MISS` = 9 at 50 MHz for a bank whose open row is another one
      (PRECHARGE, ACTIVE, READ: the hit's + 1 + tRP + tRCD in cycles; 11 at 100 MHz, 14 at
      133 MHz, where CL is 3 and the hit 7). The instance attributes ``read_latency_hit`` /
      ``read_latency_miss`` give them for the instance's clock. Not fixed beyond that: the
      first read after writes also waits for them and the write-to-read turnaround (a read
      3 cycles after a write's command: 16 at 50 MHz), and a refresh in the way adds up to
      tRP + tRFC.
      Back-to-back reads along a row return one beat per cycle.
    - ``init_done``: Out(1), high from the end of the init and check on, for good.
    - ``init_error``: Out(1), sticky: the power-up check read back a wrong word (or not all
      its words within :attr:`CHECK_TIMEOUT` cycles); ``init_done`` stays low and the port
      stays closed.
    - ``pins``: :func:`pins_signature` (``cke, cs_n, ras_n, cas_n, we_n, ba[2], a[13],
      dm[2], dq_o[16], dq_oe`` out, ``dq_i[16]`` in), all registered in the core (LiteX's
      inferred SDR IO registers; ``dq_i`` is registered on the way in). The SDRAM clock pin
      is not driven here: the board shell drives it, **phase-shifted** from the system
      clock, as litex-boards' ULX3S target does (a PLL output at 90 degrees into an
      ``ODDRX1F`` with D0 = 1, D1 = 0; the system clock into an ODDRX1F with D0 = 0,
      D1 = 1, i.e. 180 degrees, is the PLL-less variant, with less read-data margin at
      high clocks). LiteDRAM's timing assumes it: a command registered on the pins at edge
      e is taken by the chip within that cycle, and read data are captured at edge e + CL
      (the native port's ``rdata.valid`` is timed from the command, not from the data). An
      in-phase SDRAM clock would make every read a cycle late. The simulation
      (sim/sdram_stream_tb.v) clocks the chip model with the inverted system clock.

    Init (after reset; :attr:`init_cycles` cycles, ~25 k at 50 MHz, 0.5 ms): the DFII to
    software control with CKE low (at once: LiteDRAM comes out of reset in hardware control,
    and its refresher would precharge and refresh before the power-up wait ended), the
    power-up wait, then LiteDRAM's init sequence (CKE high and 20000 cycles of NOPs,
    PRECHARGE ALL, LOAD MODE with M8 ("DLL reset", as LiteDRAM writes it for SDR too),
    PRECHARGE ALL, 2 AUTO REFRESH, LOAD MODE: CL, burst 1), each CSR write a Wishbone
    transaction, each ``cdelay(n)`` at least n cycles and every step at least
    :attr:`MIN_STEP_CYCLES` (a CPU takes longer than that between two commands; tRFC and tRP
    hold so up to ~200 MHz), DFII back to hardware control, the core's ``init_done`` CSR set
    (it opens the core's native port), then the check: :func:`check_pattern`'s words written
    and read back through the native port.

    Simulate with Verilator (:meth:`verilog_sources` lists the core's Verilog); Icarus is
    not supported (see :mod:`.litedram_gen`).
    """

    READ_LATENCY_HIT = 6
    READ_LATENCY_MISS = 9
    MIN_STEP_CYCLES = 16
    CHECK_TIMEOUT = 4096

    def __init__(self, sys_clk_freq: float = 50e6, *, refresh_postponing: int = 1,
                 powerup_s: float = 100e-6, core: GeneratedCore | None = None,
                 cache_dir=None):
        if powerup_s < 100e-6:
            raise ValueError("the MT48LC16M16A2 needs >= 100 us before its first command")
        self.core = core or generate(sys_clk_freq, refresh_postponing=refresh_postponing,
                                     cache_dir=cache_dir)
        self.sys_clk_freq = sys_clk_freq
        self.refresh_postponing = refresh_postponing
        self.addr_bits = self.core.address_width
        self.data_bits = self.core.data_width
        if self.data_bits != 16:
            raise ValueError(f"expected the 16-bit native port, got {self.data_bits}")
        self.powerup_cycles = math.ceil(powerup_s * sys_clk_freq)
        #: the read latencies at this clock (the class constants are 50 MHz's): CL + 4 for a
        #: hit, plus 1 + tRP + tRCD (in cycles) for a miss; measured at 50, 100 and 133 MHz
        t = self.core.timing
        self.read_latency_hit = self.core.cl + 4
        self.read_latency_miss = self.read_latency_hit + 1 + t["tRP"] + t["tRCD"]
        self.check = check_pattern(self.core)
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout(self.addr_bits))),
            "wdata": In(stream.Signature(wdata_layout(self.data_bits))),
            "rdata": Out(stream.Signature(self.data_bits)),
            "init_done": Out(1),
            "init_error": Out(1),
            "wdata_underrun": Out(1),
            "pins": Out(pins_signature(self.core.rowbits, self.core.bankbits,
                                       self.data_bits)),
        })

    def verilog_sources(self) -> list[Path]:
        """The Verilog files a simulation must compile beside this component's."""
        return [self.core.verilog]

    def _program(self):
        """The init as a list of ops: ("wb", csr word address, value) and ("wait", n)."""
        csr = self.core.csr
        ops = [("wb", csr["sdram_dfii_control"], 0),          # software, CKE low, NOPs
               ("wait", self.powerup_cycles)]
        for step in self.core.init_sequence:
            ops += [("wb", csr[name], value) for name, value in step.writes]
            ops.append(("wait", max(step.delay, self.MIN_STEP_CYCLES)))
        ops += [("wb", csr["sdram_dfii_control"], DFII_CONTROL_HARDWARE),
                ("wait", self.MIN_STEP_CYCLES),
                ("wb", csr["ddrctrl_init_done"], 1)]
        return ops

    @property
    def init_cycles(self) -> int:
        """A lower bound of the init's length in cycles (waits plus 2 cycles a CSR write,
        before the check)."""
        return sum(op[1] if op[0] == "wait" else 2 for op in self._program())

    def elaborate(self, platform):
        m = Module()
        core = self.core
        aw, dw = self.addr_bits, self.data_bits

        # The core's native port and Wishbone slave.
        n_cmd_valid, n_cmd_ready, n_cmd_we = Signal(), Signal(), Signal()
        n_cmd_addr = Signal(aw)
        n_wdata_valid, n_wdata_ready = Signal(), Signal()
        n_wdata_data, n_wdata_we = Signal(dw), Signal(dw // 8)
        n_rdata_valid, n_rdata_data = Signal(), Signal(dw)
        wb_adr, wb_dat_w, wb_dat_r = Signal(30), Signal(32), Signal(32)
        wb_cyc, wb_stb, wb_we, wb_ack, wb_err = Signal(), Signal(), Signal(), Signal(), Signal()
        core_init_done, core_init_error = Signal(), Signal()
        p = self.pins
        m.submodules.core = Instance(
            core.module_name,
            i_clk=ClockSignal(), i_rst=ResetSignal(),
            o_init_done=core_init_done, o_init_error=core_init_error,
            o_sdram_a=p.a, o_sdram_ba=p.ba, o_sdram_cas_n=p.cas_n, o_sdram_cke=p.cke,
            o_sdram_cs_n=p.cs_n, o_sdram_dm=p.dm, o_sdram_dq_o=p.dq_o, o_sdram_dq_oe=p.dq_oe,
            i_sdram_dq_i=p.dq_i, o_sdram_ras_n=p.ras_n, o_sdram_we_n=p.we_n,
            i_user_port_native_0_cmd_addr=n_cmd_addr, o_user_port_native_0_cmd_ready=n_cmd_ready,
            i_user_port_native_0_cmd_valid=n_cmd_valid, i_user_port_native_0_cmd_we=n_cmd_we,
            o_user_port_native_0_rdata_data=n_rdata_data,
            i_user_port_native_0_rdata_ready=1,         # ignored by LiteDRAM; tied high
            o_user_port_native_0_rdata_valid=n_rdata_valid,
            i_user_port_native_0_wdata_data=n_wdata_data,
            o_user_port_native_0_wdata_ready=n_wdata_ready,
            i_user_port_native_0_wdata_valid=n_wdata_valid,
            i_user_port_native_0_wdata_we=n_wdata_we,
            o_wb_ctrl_ack=wb_ack, i_wb_ctrl_adr=wb_adr, i_wb_ctrl_bte=0, i_wb_ctrl_cti=0,
            i_wb_ctrl_cyc=wb_cyc, o_wb_ctrl_dat_r=wb_dat_r, i_wb_ctrl_dat_w=wb_dat_w,
            o_wb_ctrl_err=wb_err, i_wb_ctrl_sel=0xF, i_wb_ctrl_stb=wb_stb, i_wb_ctrl_we=wb_we,
        )
        if platform is not None:
            platform.add_file(core.verilog.name, core.verilog.read_text())

        done = Signal()
        error = Signal()
        m.d.comb += [self.init_done.eq(done), self.init_error.eq(error)]

        # The user's streams, connected once the init is done.
        checking = Signal()
        chk_cmd_valid, chk_cmd_we = Signal(), Signal()
        chk_cmd_addr = Signal(aw)
        chk_wdata_valid = Signal()
        chk_wdata_data = Signal(dw)
        with m.If(done):
            m.d.comb += [
                n_cmd_valid.eq(self.cmd.valid), n_cmd_we.eq(self.cmd.payload.we),
                n_cmd_addr.eq(self.cmd.payload.addr), self.cmd.ready.eq(n_cmd_ready),
                n_wdata_valid.eq(self.wdata.valid), n_wdata_data.eq(self.wdata.payload.data),
                n_wdata_we.eq(self.wdata.payload.we), self.wdata.ready.eq(n_wdata_ready),
            ]
        with m.Else():
            m.d.comb += [
                n_cmd_valid.eq(chk_cmd_valid & checking), n_cmd_we.eq(chk_cmd_we),
                n_cmd_addr.eq(chk_cmd_addr),
                n_wdata_valid.eq(chk_wdata_valid & checking),
                n_wdata_data.eq(chk_wdata_data), n_wdata_we.eq((1 << (dw // 8)) - 1),
            ]
        with m.If(done & n_wdata_ready & ~self.wdata.valid):
            m.d.sync += self.wdata_underrun.eq(1)
        m.d.comb += [self.rdata.valid.eq(n_rdata_valid & done),
                     self.rdata.payload.eq(n_rdata_data)]

        # The power-up check: all writes, then all reads, compared in order.
        chk = self.check
        n = len(chk)
        chk_addr = [a for a, _ in chk]
        chk_val = [v for _, v in chk]
        cmd_i = Signal(range(2 * n + 1))     # writes 0..n-1, reads n..2n-1
        wd_i = Signal(range(n + 1))
        rd_i = Signal(range(n + 1))
        bad = Signal()
        timer = Signal(range(self.CHECK_TIMEOUT + 1))
        addr_rom = Array(chk_addr + chk_addr + [0])
        val_rom = Array(chk_val + [0])
        m.d.comb += [
            chk_cmd_valid.eq(cmd_i < 2 * n), chk_cmd_we.eq(cmd_i < n),
            chk_cmd_addr.eq(addr_rom[cmd_i]),
            chk_wdata_valid.eq(wd_i < n), chk_wdata_data.eq(val_rom[wd_i]),
        ]
        with m.If(checking):
            m.d.sync += timer.eq(timer + 1)
            with m.If(n_cmd_valid & n_cmd_ready):
                m.d.sync += cmd_i.eq(cmd_i + 1)
            with m.If(n_wdata_valid & n_wdata_ready):
                m.d.sync += wd_i.eq(wd_i + 1)
            with m.If(n_rdata_valid & (rd_i < n)):
                m.d.sync += rd_i.eq(rd_i + 1)
                with m.If(n_rdata_data != val_rom[rd_i]):
                    m.d.sync += bad.eq(1)

        # The init program over Wishbone.
        ops = self._program()
        wait_max = max(op[1] for op in ops if op[0] == "wait")
        ctr = Signal(range(wait_max + 1))
        with m.FSM():
            for i, op in enumerate(ops):
                nxt = f"op{i + 1}" if i + 1 < len(ops) else "check"
                with m.State(f"op{i}"):
                    if op[0] == "wb":
                        m.d.comb += [wb_cyc.eq(1), wb_stb.eq(1), wb_we.eq(1),
                                     wb_adr.eq(op[1]), wb_dat_w.eq(op[2])]
                        with m.If(wb_ack | wb_err):
                            m.next = nxt
                    else:
                        m.d.sync += ctr.eq(ctr + 1)
                        with m.If(ctr == op[1] - 1):
                            m.d.sync += ctr.eq(0)
                            m.next = nxt
            with m.State("check"):
                m.d.comb += checking.eq(1)
                with m.If((rd_i == n) | (timer == self.CHECK_TIMEOUT)):
                    with m.If(bad | (rd_i != n)):
                        m.next = "fail"
                    with m.Else():
                        m.next = "done"
            with m.State("fail"):
                m.d.comb += [wb_cyc.eq(1), wb_stb.eq(1), wb_we.eq(1),
                             wb_adr.eq(core.csr["ddrctrl_init_error"]), wb_dat_w.eq(1)]
                m.d.sync += error.eq(1)
                with m.If(wb_ack | wb_err):
                    m.next = "error"
            with m.State("error"):
                pass
            with m.State("done"):
                m.d.sync += done.eq(1)
        return m
