"""FPGA hard blocks as components, instantiated directly where synthesis would not use them
well. :class:`BlockRam`: the ECP5's 18-kbit block RAM (DP16KD) as a true dual-port memory,
its output register usable.

Why instantiate it ourselves: Yosys (0.70, ``memory_libmap``) maps an Amaranth
``lib.memory.Memory`` with one write port and N read ports to N copies of the memory (a
4096 x 32 memory with a write port and two read ports takes 16 DP16KD, even when one read
port shares the write port's address), and it never sets DP16KD's ``REGMODE`` to
``OUTREG``, so every block RAM read costs its ~5.6 ns clock-to-out (speed 6; 0.94 ns with
the output register, nextpnr's timing database). A DP16KD has two full ports, each able to
read and write: one copy can take a write plus a read on port A and another read on port B.
"""

from amaranth import Cat, ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2
from amaranth.vendor import LatticePlatform

# DP16KD's true dual-port configurations, (data bits, words) per port: 18,432 bits at x9
# and x18 (the ninth bits), 16,384 below. x36 (512 words) exists only in pseudo-dual-port
# mode (PDPW16KD: one write port, one read port), so a memory with two read ports cannot
# use it. Yosys's lattice/brams_16kd.txt lists the same widths ("widths 1 2 4 9 18").
DP16KD_CONFIGS = ((18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))
# The word address sits at AD[13:ADDR_LSB] (Yosys's brams_map_16kd.v: AD[i] = ADDR[i], the
# address counted in bits of the x1 configuration). At x18, AD[1:0] are the write's two
# byte enables (bits [8:0] and [17:9]): tied high, a write writes the whole word.
ADDR_LSB = {18: 4, 9: 3, 4: 2, 2: 1, 1: 0}


def dp16kd_geometry(width: int, depth: int, tile_width: int | None = None):
    """How :class:`BlockRam` tiles ``width`` x ``depth`` with DP16KD:
    ``(tile_width, tile_depth, columns, rows)``. Fewest blocks first, then fewest rows (a
    narrower, deeper tile needs no output mux), then the wider tile. ``tile_width`` forces
    one configuration (1, 2, 4, 9 or 18)."""
    configs = DP16KD_CONFIGS
    if tile_width is not None:
        configs = [c for c in DP16KD_CONFIGS if c[0] == tile_width]
        if not configs:
            raise ValueError(f"tile_width must be one of {[c[0] for c in DP16KD_CONFIGS]}")
    best = None
    for w, d in configs:
        cols, rows = -(-width // w), -(-depth // d)
        key = (cols * rows, rows, -w)
        if best is None or key < best[0]:
            best = key, (w, d, cols, rows)
    return best[1]


class BlockRam(wiring.Component):
    """``depth`` words of ``width`` bits with two ports, A (read and write) and B (read; also
    write with ``b_writable=True``), in ECP5 block RAM (DP16KD, instantiated directly) or,
    on any other platform, a behavioral model with the same cycle behavior.

    Ports (``abits`` = ``max(1, ceil_log2(depth))``; P is ``a`` or ``b``):

    - ``P_addr``: In(abits). Addresses >= ``depth`` read an unspecified word and a write to
      one may land anywhere or nowhere: don't.
    - ``P_wdata``: In(width), ``P_we``: In(1) (``b_*`` only with ``b_writable``): write
      ``P_wdata`` at ``P_addr`` at the edge where ``P_we`` is high.
    - ``P_en``: In(1), init 1 (leave it undriven for a port that reads every cycle): the
      port reads ``P_addr`` at each edge where ``P_en`` is high or, with
      ``read_on_write="old"`` (the default), ``P_we`` is high: a write reads the old word,
      then writes. With ``read_on_write="hold"`` a write is no read, even with ``P_en``
      high: the read stage keeps its word. At an edge with neither, the port does nothing
      and its read stage keeps its word. It is DP16KD's clock enable (``CEA`` / ``CEB`` =
      ``P_en | P_we``; with ``"hold"`` and ``rows`` > 1, per row: ``P_en & ~P_we`` or a
      write to that row), so it costs an OR (a LUT per row) and no more.
    - ``P_rdata``: Out(width): the word of the port's latest access, from ``LATENCY``
      cycles after it until the next access's word replaces it. With
      ``output_register=True`` the output register loads the read stage at every edge
      (``OCE`` = 1, not gated by ``P_en``): it is the read stage one cycle late, so an idle
      port's word holds there too, one cycle later. Before the port's first access it reads
      0. The ``sync`` domain's reset touches neither the memory nor the read data (DP16KD's
      ``RST`` is tied low; the model's registers are reset-less).

    Latency, counted as for Amaranth's synchronous read port: address (and ``P_en`` /
    ``P_we``) presented in cycle N, sampled at the edge that ends it; the word is on
    ``P_rdata`` in cycle N + ``LATENCY``. ``LATENCY`` = 1 without the output register
    (exactly ``lib.memory``'s read port with ``transparent_for=()`` and ``en`` =
    ``P_en | P_we``, or ``P_en & ~P_we`` with ``"hold"``), 2 with it.

    Read-during-write: a read on the port that writes the same address returns the OLD word
    (DP16KD ``WRITEMODE`` = ``"READBEFOREWRITE"``, Yosys's brams_16kd.txt: ``rdwr old``),
    or with ``read_on_write="hold"`` (``WRITEMODE`` = ``"NORMAL"``, ``rdwr no_change``)
    nothing: the port's read data keeps its word (see ``P_en``); that mode has the faster
    clock (Timing, below).
    A read on the other port of an address written at the same edge is an address
    collision, for which Lattice defines no result (TN1264 states read-before-write per
    port only; Yosys's brams_16kd.txt declares no cross-port behavior and Yosys, mapping
    lib.memory, never lets one reach a DP16KD's two ports): treat that word as undefined.
    The behavioral model returns the old word. Both ports writing one address at one edge:
    undefined (the model keeps one of the two words).

    Throughput: one access per port per cycle, both ports every cycle.

    Resources (ECP5): :meth:`blocks` DP16KD: ``columns`` x ``rows`` tiles of one
    configuration (:func:`dp16kd_geometry`: fewest blocks, then fewest rows), e.g. 32 x 4096:
    8 (4096 x 4 each, no output mux); 16 x 1024: 1 (x18); 256 x 512: 15 (x18; a x36 tile
    would need pseudo-dual-port mode); 40 x 3000: 9 (3 columns x 3 rows of 1024 x 18). With
    ``rows`` > 1: a ``rows``:1 mux per output bit per port, after the block's output (or
    after its output register), selected by the address's high bits delayed by
    ``LATENCY`` registers, plus a write-enable decode. No other logic. ``init`` is not
    supported (the contents start at 0: DP16KD's ``INITVAL`` default; so does the model).
    DP16KD ``GSR`` = ``"DISABLED"``, ``RESETMODE`` = ``"SYNC"``, chip selects unused.
    Timing (nextpnr's database, speed 6): clock-to-out 5.6 ns without the output register,
    0.94 ns with it; READBEFOREWRITE lists a 3.235 ns minimum clock pulse width, high and
    low (NORMAL: 2.359 ns), i.e. at most ~154 MHz at a 50 % duty cycle (NORMAL: ~212 MHz);
    nextpnr does not check pulse widths, so its Fmax does not show this limit. Placed
    (bitstreams/ooc.py's harness and flow, ECP5-85F speed 6), 32 x 4096 with both ports'
    words into a 32-bit adder and a register: 191.0 MHz with the output register (either
    ``read_on_write``), 103.0 MHz without; lib.memory (two copies) 91.9 MHz; x18 tiles
    forced (4 rows, a 4:1 mux before the adder) 138.5 MHz.

    ``family``: ``None`` (default) takes the DP16KD tiles when ``elaborate``'s platform is
    an ECP5 (``amaranth.vendor.LatticePlatform`` with ``family == "ecp5"``) and the model
    otherwise (None: Amaranth's simulator; Verilog for Verilator or Icarus); ``"ecp5"`` or
    ``"generic"`` forces one (tests simulate the ``"ecp5"`` Verilog with a DP16KD model).
    ``tile_width`` forces one DP16KD configuration.

    Versus lib.memory (Yosys 0.70 synth_ecp5, 32 x 4096, one write port and read ports
    on the write address and on another): Yosys builds two copies, 16 DP16KD plus ~100 LUT4
    and ~110 FF (it delays each write a cycle behind a bypass to give the old word on
    both read ports); this component: 8 DP16KD and 1 LUT4. With a second write port
    (``b_writable``'s model) Yosys maps no block RAM at all (the memory stays ``$mem``
    after ``map_ram``, i.e. becomes flip-flops).
    Tests: tests/test_hardblocks.py (the model against a dict model; the DP16KD tiles on a
    DP16KD model that is itself checked against Yosys's own DP16KD mappings).
    """

    def __init__(self, width: int, depth: int, *, output_register: bool = False,
                 b_writable: bool = False, read_on_write: str = "old",
                 family: str | None = None, tile_width: int | None = None):
        if width < 1 or depth < 1:
            raise ValueError("width and depth must be >= 1")
        if read_on_write not in ("old", "hold"):
            raise ValueError(f"read_on_write must be 'old' or 'hold', not {read_on_write!r}")
        if family not in (None, "ecp5", "generic"):
            raise ValueError(f"family must be None, 'ecp5' or 'generic', not {family!r}")
        self.width, self.depth = width, depth
        self.output_register, self.b_writable, self.family = \
            output_register, b_writable, family
        self.read_on_write = read_on_write
        self.LATENCY = 2 if output_register else 1
        self.abits = max(1, ceil_log2(depth))
        (self.tile_width, self.tile_depth, self.columns,
         self.rows) = dp16kd_geometry(width, depth, tile_width)
        members = {
            "a_addr": In(self.abits), "a_wdata": In(width), "a_we": In(1),
            "a_en": In(1, init=1), "a_rdata": Out(width),
            "b_addr": In(self.abits), "b_en": In(1, init=1), "b_rdata": Out(width),
        }
        if b_writable:
            members.update({"b_wdata": In(width), "b_we": In(1)})
        super().__init__(members)

    def blocks(self) -> int:
        """DP16KD blocks of the ECP5 mapping."""
        return self.columns * self.rows

    def _port(self, p: str):
        """(addr, wdata, we, en, rdata) of port ``p``; constants for B's write when it has
        none."""
        if p == "a" or self.b_writable:
            wdata, we = getattr(self, f"{p}_wdata"), getattr(self, f"{p}_we")
        else:
            wdata, we = Const(0, self.width), Const(0, 1)
        return (getattr(self, f"{p}_addr"), wdata, we, getattr(self, f"{p}_en"),
                getattr(self, f"{p}_rdata"))

    def _reads(self, en, we):
        """Whether the port's read stage loads at this edge."""
        return en | we if self.read_on_write == "old" else en & ~we

    def elaborate(self, platform):
        family = self.family
        if family is None:
            ecp5 = isinstance(platform, LatticePlatform) and platform.family == "ecp5"
            family = "ecp5" if ecp5 else "generic"
        return self._dp16kd() if family == "ecp5" else self._model()

    # -- the behavioral model: lib.memory, old data on every read-during-write ---------------
    def _model(self):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=self.width, depth=self.depth, init=[])
        ports = ["a", "b"]
        for p in ports:
            addr, wdata, we, en, rdata = self._port(p)
            if p == "a" or self.b_writable:
                wr = mem.write_port()
                m.d.comb += [wr.addr.eq(addr), wr.data.eq(wdata), wr.en.eq(we)]
        for p in ports:
            addr, wdata, we, en, rdata = self._port(p)
            rd = mem.read_port(domain="sync", transparent_for=())
            m.d.comb += [rd.addr.eq(addr), rd.en.eq(self._reads(en, we))]
            if self.output_register:
                q = Signal(self.width, name=f"{p}_outreg", reset_less=True)
                m.d.sync += q.eq(rd.data)
                m.d.comb += rdata.eq(q)
            else:
                m.d.comb += rdata.eq(rd.data)
        return m

    # -- ECP5: DP16KD tiles --------------------------------------------------------------------
    def _dp16kd(self):
        m = Module()
        w, d, cols, rows = self.tile_width, self.tile_depth, self.columns, self.rows
        tbits = ceil_log2(d)                 # 10 (x18) .. 14 (x1)
        lsb = ADDR_LSB[w]
        regmode = "OUTREG" if self.output_register else "NOREG"
        writemode = {"old": "READBEFOREWRITE", "hold": "NORMAL"}[self.read_on_write]
        outs = {}                            # port -> [row word]
        sels, lows, wes, dis, ces = {}, {}, {}, {}, {}
        for p in ("a", "b"):
            addr, wdata, we, en, rdata = self._port(p)
            low = addr[:min(tbits, self.abits)]
            high = addr[tbits:] if self.abits > tbits else Const(0, 1)
            lows[p] = low
            # each row's write enable and clock enable; the row select follows the read data
            hit = [high == r if rows > 1 else Const(1) for r in range(rows)]
            wes[p] = [we & h for h in hit]
            if self.read_on_write == "old":     # every row reads (the old word) on a write
                ces[p] = [en | we] * rows
            else:                               # only the written row is enabled on a write
                ces[p] = [(en & ~we) | (we & h) for h in hit]
            dis[p] = Cat(wdata, Const(0, cols * w - self.width))
            sel = high
            for stage in range(self.LATENCY if rows > 1 else 0):
                q = Signal(len(high), name=f"{p}_row_{stage}", reset_less=True)
                if stage == 0:
                    with m.If(self._reads(en, we)):
                        m.d.sync += q.eq(sel)
                else:
                    m.d.sync += q.eq(sel)
                sel = q
            sels[p] = sel
            outs[p] = [Signal(cols * w, name=f"{p}_row{r}_data") for r in range(rows)]
        for r in range(rows):
            for c in range(cols):
                kw = {}
                for p, P in (("a", "A"), ("b", "B")):
                    ad = Cat(Const(0b11 if w == 18 else 0, lsb), lows[p],
                             Const(0, 14 - lsb - len(lows[p])))
                    di = Cat(dis[p][c * w:(c + 1) * w], Const(0, 18 - w))
                    do = Signal(18, name=f"r{r}c{c}_do{p}")
                    m.d.comb += outs[p][r][c * w:(c + 1) * w].eq(do[:w])
                    kw.update({f"i_AD{P}{i}": ad[i] for i in range(14)})
                    kw.update({f"i_DI{P}{i}": di[i] for i in range(18)})
                    kw.update({f"o_DO{P}{i}": do[i] for i in range(18)})
                    kw.update({
                        f"i_CLK{P}": ClockSignal("sync"), f"i_CE{P}": ces[p][r],
                        f"i_OCE{P}": Const(1), f"i_WE{P}": wes[p][r], f"i_RST{P}": Const(0),
                        f"i_CS{P}0": Const(0), f"i_CS{P}1": Const(0), f"i_CS{P}2": Const(0),
                        f"p_DATA_WIDTH_{P}": w, f"p_REGMODE_{P}": regmode,
                        f"p_WRITEMODE_{P}": writemode, f"p_CSDECODE_{P}": "0b000",
                    })
                m.submodules[f"bram_r{r}c{c}"] = Instance(
                    "DP16KD", p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
                    p_GSR="DISABLED", **kw)
        for p in ("a", "b"):
            rdata = self._port(p)[4]
            # a chain of Mux, not a Switch: Amaranth writes a Switch as an ``always @*``,
            # which Icarus leaves X until one of its inputs changes (TOOLCHAIN.md)
            word = outs[p][rows - 1]
            for r in reversed(range(rows - 1)):
                word = Mux(sels[p] == r, outs[p][r], word)
            m.d.comb += rdata.eq(word[:self.width])
        return m
