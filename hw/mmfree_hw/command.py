"""The command processor: the byte stream of ``mmfree_fpga.commands`` in, the core's memory
accesses, token runs and replies out.

The command set (opcodes, payloads, replies, status codes, records) is specified in
``mmfree_fpga.commands``; this module implements it and imports every constant from there.
"""

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import crc, data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree_fpga import commands as C
from mmfree_fpga.isa import Space

#: A ``run`` beat: one token for the sequencer.
RUN_LAYOUT = data.StructLayout({
    "token": 32,        # the token id as the host sent it (the sequencer range-checks it)
    "k_run": 8,         # candidates wanted: topk for the RUN's last token, else 0
    "first": 1,         # first token of this RUN command
    "last": 1,          # last token of this RUN command
})

#: A ``token_done`` beat: the token has finished (ok) or the sequencer stopped (not ok).
TOKEN_DONE_LAYOUT = data.StructLayout({"ok": 1})


#: The CRC command's algorithm: zlib.crc32's (``commands.py``; test_command_amaranth checks
#: the two are equal).
CRC_ALGORITHM = crc.catalog.CRC32_ISO_HDLC


def _reflect(value: int, bits: int) -> int:
    return int(f"{value:0{bits}b}"[::-1], 2)


def crc_step_matrices(algorithm: crc.Algorithm, nbytes: int) -> tuple[list[int], list[int]]:
    """The register update of a reflected CRC over ``nbytes`` bytes, as GF(2) matrices.

    With the register held reflected (bit 0 is the term the next data bit meets, as in
    every byte-wise LSB-first implementation) and the bytes as one little-endian integer
    ``d`` (byte 0 first, each LSB first), the register after them is ``A r ^ B d``.
    Returned as columns: ``a[j]`` is the new register of ``r = 1 << j, d = 0`` and ``b[k]``
    that of ``r = 0, d = 1 << k``. Both come from ``lib.crc``'s own reference
    (``Parameters.compute``), so the hardware is the catalog entry's by construction."""
    if not (algorithm.reflect_input and algorithm.reflect_output):
        raise ValueError("only reflected CRCs (byte-wise LSB first) are supported")
    w = algorithm.crc_width

    def update(r: int, d: int) -> int:
        raw = crc.Algorithm(crc_width=w, polynomial=algorithm.polynomial,
                            initial_crc=_reflect(r, w), reflect_input=True,
                            reflect_output=True, xor_output=0)
        return raw(8 * nbytes).compute([d])

    return ([update(1 << j, 0) for j in range(w)],
            [update(0, 1 << k) for k in range(8 * nbytes)])


class ChunkCRC(wiring.Component):
    """A CRC of a byte stream taken up to ``chunk_bytes`` bytes a cycle, in chunks of any of
    the byte counts ``sizes`` (``algorithm``, a reflected ``lib.crc.Algorithm``; default
    :data:`CRC_ALGORITHM`).

    Ports: ``start`` (In): the register restarts at the initial value at this edge (before
    this cycle's data, if ``valid``). ``valid`` (In), ``data`` (In, ``8 x chunk_bytes``),
    ``nbytes`` (In): this cycle's bytes are the low ``nbytes`` bytes of ``data``, byte 0
    first; ``nbytes`` must be one of ``sizes`` (each its own XOR network, built only for the
    sizes asked for). ``crc`` (Out, the algorithm's width): the CRC of every byte taken
    since the last ``start``, final XOR applied (``algorithm(8).compute`` of those bytes).

    Latency 1 (``crc`` shows a chunk the cycle after it was taken, from a register, so the
    XOR networks sit between this register and the one feeding ``data``); throughput one
    chunk a cycle. Resources: the register, and per size ``n`` one XOR of at most
    ``width + 8 n`` inputs per register bit (about half of them on average), a
    ``len(sizes)``-way mux. ECP5 (Yosys synth_ecp5), CRC-32, with the sizes the command
    processor asks for at 128 lanes: ``chunk_bytes`` 1: 186 LUT4; 4 (sizes 4, 2): 611;
    8 (8, 4, 2): 998; 16 (16, 4, 2): 1,471; 32 (32, 16, 4, 2): 2,741. The networks are
    ``Cat(...).xor()`` reductions, which Yosys maps well (one 4-byte network: 288 LUT4,
    16 bytes: 814, 32 bytes: 1,456, in 1 to 6 s); ``lib.crc.Processor``'s chains of
    two-input XORs cost ~40 % more (413 and 1,176 LUT4 at 4 and 16 bytes) and stall
    synth_ecp5 (50 s at 16 bytes, more than 10 minutes at 32): hence this unit, not a
    ``Processor`` per word width.
    """

    def __init__(self, chunk_bytes: int, sizes, algorithm: crc.Algorithm = CRC_ALGORITHM):
        self.chunk_bytes = chunk_bytes
        self.sizes = sorted(set(sizes))
        self.algorithm = algorithm
        if not self.sizes or not all(1 <= n <= chunk_bytes for n in self.sizes):
            raise ValueError(f"sizes {self.sizes} must be in 1 .. {chunk_bytes}")
        super().__init__({
            "start": In(1),
            "valid": In(1),
            "data": In(8 * chunk_bytes),
            "nbytes": In(range(chunk_bytes + 1)),
            "crc": Out(algorithm.crc_width),
        })

    def elaborate(self, platform):
        m = Module()
        algo = self.algorithm
        w = algo.crc_width
        init = _reflect(algo.initial_crc, w)
        reg = Signal(w, init=init)            # reflected: bit 0 meets the next data bit
        m.d.comb += self.crc.eq(reg ^ algo.xor_output)
        src = Mux(self.start, Const(init, w), reg)
        nxt = Signal(w)
        with m.Switch(self.nbytes):
            for n in self.sizes:
                a, b = crc_step_matrices(algo, n)
                with m.Case(n):
                    for i in range(w):
                        terms = [src[j] for j in range(w) if a[j] >> i & 1] + \
                                [self.data[k] for k in range(8 * n) if b[k] >> i & 1]
                        m.d.comb += nxt[i].eq(Cat(*terms).xor())
        with m.If(self.valid):
            m.d.sync += reg.eq(nxt)
        with m.Elif(self.start):
            m.d.sync += reg.eq(init)
        return m


def addr_bits(words: int) -> int:
    """Address width of a space of ``words`` words (``ceil(log2(words))``, at least 1)."""
    return max(1, (words - 1).bit_length())


def mem_access_signature(addr_width: int, data_width: int) -> wiring.Signature:
    """One memory space's access port, as the command processor sees it (the core's side
    is its ``.flip()``):

    - ``write``: Out stream, payload ``{addr, data}``: write ``data`` at ``addr``. The
      processor holds the beat until ``ready``; a memory may tie ``ready`` high.
    - ``read_addr``: Out stream of addresses; ``read_data``: In stream of the words, in
      order, any latency (0 included). The processor keeps at most one read outstanding: it
      offers the next address no earlier than the cycle in which it takes the previous word
      (READ the cycle after, CRC in that very cycle), so a responder needs no queue. One
      whose ``read_addr.ready`` is high while it hands over a word (:func:`serve_memory`,
      the core's host ports) serves CRC a word a cycle; one that takes the next address
      only once its word has gone (``weights.WeightMemory``) just takes it a cycle later.
      A ``lib.memory`` read port answers with :func:`serve_memory`.
    """
    return wiring.Signature({
        "write": Out(stream.Signature(data.StructLayout({"addr": addr_width,
                                                          "data": data_width}))),
        "read_addr": Out(stream.Signature(addr_width)),
        "read_data": In(stream.Signature(data_width)),
    })


def port_name(space: Space) -> str:
    return f"mem_{Space(space).name.lower()}"


class CommandProcessor(wiring.Component):
    """Executes the command byte stream against the core (``commands.py`` has the bytes).

    Built from a ``CoreConfig``: its lanes, the size of every space and ``max_topk`` (the
    IDENTIFY reply is a constant of the build, ``commands.identify_reply``), and:

    - ``build_id``: the u32 IDENTIFY reports (default 0, "not given"): whoever builds the
      bitstream or simulator picks it, e.g. ``commands.build_id_of`` of the core
      configuration and the Verilog generated with build id 0. It is part of the IDENTIFY
      constant, nothing else.
    - ``crc_bytes``: the bytes the CRC command's :class:`ChunkCRC` takes a cycle (default
      16). A word of ``b`` bytes takes ``k = ceil(b / crc_bytes)`` cycles; 16 keeps the CRC
      at the memories' pace in ``top.Accelerator`` (a 32-byte WEIGHTS word takes 2 cycles,
      the weight store's host read 3; every other word 1) for about half the LUTs of a
      32-byte unit (:class:`ChunkCRC`: 1,471 LUT4 against 2,741; 4 bytes, 611 LUT4, would
      make a WEIGHTS word 8 cycles; 1 byte, 186 LUT4, 32).

    Ports (``lib.stream``: a beat transfers at a clock edge where valid and ready are high):

    Host side
      ``cmd_in``: In stream, 8 bits: command bytes. ``cmd_out``: Out stream, 8 bits: reply
      bytes (registered). ``busy``: Out: low exactly when the processor can do nothing
      until the host sends a byte: it waits for ``cmd_in`` (between commands, or inside one
      for its next byte) with no reply byte pending, nothing being written and no token
      running. A simulation harness that has no input left may stop clocking (block on its
      input) when ``busy`` and ``cmd_out.valid`` are both low.

    Memories, one access port per space (:func:`mem_access_signature`), named
      ``mem_weights``, ``mem_params``, ``mem_embed``, ``mem_scratch``, ``mem_state``,
      ``mem_program`` (:func:`port_name`); address width ``addr_bits(size)``, data width the
      space's word width (``CoreConfig.word_width``). Accesses happen only between tokens
      (never while a ``run`` beat is outstanding), so a core may share its memories'
      ports with the sequencer, switched by "no token running".

    Sequencer side
      ``run``: Out stream of :data:`RUN_LAYOUT`, one beat per token of a RUN, in order; the
      next beat only after the previous token's ``token_done``. ``records``: In stream, 8
      bits: the bytes of the token's TRACE, RESULT and ERROR records exactly as
      ``commands.py`` lays them out (the sequencer makes them; they are forwarded
      untouched). ``token_done``: In stream of :data:`TOKEN_DONE_LAYOUT`, one beat per
      ``run`` beat, after the token's last record byte (the processor takes it only while
      ``records.valid`` is low, so a sequencer may also offer it early if ``records.valid``
      stays high until its last record byte has gone). ``ok = 0`` (the sequencer
      stopped, after its ERROR record) ends the RUN: the remaining token ids are read and
      dropped, DONE follows. ``reset_state``: Out stream, no payload: one beat per
      RESET_STATE (the sequencer's "next token is a sequence's first"); the reply waits
      for ``ready``. ``reset_counters``: Out stream, no payload: one beat per
      RESET_COUNTERS. ``counters``: In, ``ArrayLayout(32, commands.default_counters(memory))``:
      read for DONE one cycle after the last ``token_done`` transferred (a token's counts
      must be in by then) and for COUNTERS; it must be stable while no token runs.
    - ``mem_status``: In, 8 bits (``commands.MemoryStatus``): the weight memory's status,
      IDENTIFY's last byte, sampled as IDENTIFY is answered; 0 (ready) when not driven.
      ``memory``, ``packing`` and ``onchip_words`` (``commands.MemoryKind``,
      ``commands.Packing``, the weight words in block RAM) are the constants IDENTIFY
      reports before it; ``memory`` also sets the counter count.

    Cycles (no back-pressure, memories answering in 1 cycle; test_command_amaranth asserts
    them): a byte in per cycle, with one cycle's pause after a WRITE/READ/CRC/RUN header
    (it is checked); a byte out per cycle throughout, READ of 2-byte words included. A
    reply's first byte is on ``cmd_out`` 3 cycles after the cycle that took the command's
    last byte; IDENTIFY, COUNTERS and READ words follow at one byte a cycle; the next command's
    first byte is taken the cycle after its reply's last byte went into the output
    register. RUN: a token's ``run`` beat is valid the cycle after its last id byte was
    taken; after its ``token_done`` the next token's 4 id bytes take 4 cycles (a core that
    wants the next beat sooner can ask for a prefetch; at ~50 k cycles a token it is
    0.01 %); records pass at a byte a cycle.

    CRC: the status 3 cycles after the command's last byte (as READ's); the first word is
    taken ``L`` cycles after the status went out (``L``: the memory's read latency, 1 for
    :func:`serve_memory` and the core's host ports, ``weights.WeightMemory``'s
    ``HOST_READ_LATENCY`` = 2), then a word every ``max(k, r)`` cycles, where ``r`` is the
    memory's round trip for back-to-back reads (the next address is offered in the cycle
    the previous word is taken): 1 behind :func:`serve_memory` and the core's host ports, 3
    behind the weight store; each word's ``k`` chunks are fed to the CRC unit in the ``k``
    cycles after it was taken, and the u32 follows 2 cycles after the last chunk, at a byte
    a cycle. From the command's last byte to the CRC's first:
    ``5 + L + k + max(k, r) x (count - 1)`` cycles. In ``top.Accelerator`` with SIM:
    WEIGHTS 3 cycles per 32-byte word (the shipped model's 48,128 words: ~144 k cycles),
    EMBED, PARAMS and the other spaces a word a cycle.

    Resources: an 8-bit output register, a ``max(46, 1 + 4 x counters, word bytes)``-byte
    shift register for replies, read words and the words CRC'd, a word-wide shift register
    for WRITE, the header and the address/count registers, and the :class:`ChunkCRC` (its
    XOR networks, one per chunk size: with 128 lanes and ``crc_bytes`` = 16, 16-, 4- and
    2-byte chunks).
    """

    def __init__(self, core_config, build_id: int = 0, crc_bytes: int = 16,
                 memory: C.MemoryKind = C.MemoryKind.ON_CHIP,
                 packing: C.Packing = C.Packing.CODES_2BIT, onchip_words: int | None = None):
        self._cfg = cfg = core_config
        self.memory, self.packing = C.MemoryKind(memory), C.Packing(packing)
        self.onchip_words = onchip_words
        self._n_counters = C.default_counters(self.memory)
        if not 0 <= build_id < 1 << 32:
            raise ValueError(f"build_id = {build_id} does not fit IDENTIFY's u32")
        if crc_bytes < 1:
            raise ValueError("crc_bytes must be at least 1")
        self.build_id, self.crc_bytes = build_id, crc_bytes
        members = {
            "cmd_in": In(stream.Signature(8)),
            "cmd_out": Out(stream.Signature(8)),
            "busy": Out(1),
            "run": Out(stream.Signature(RUN_LAYOUT)),
            "records": In(stream.Signature(8)),
            "token_done": In(stream.Signature(TOKEN_DONE_LAYOUT)),
            "reset_state": Out(stream.Signature(0)),
            "reset_counters": Out(stream.Signature(0)),
            "counters": In(data.ArrayLayout(32, self._n_counters)),
            "mem_status": In(8),
        }
        for s in Space:
            members[port_name(s)] = Out(mem_access_signature(addr_bits(cfg.size(s)),
                                                             cfg.word_width(s)))
        super().__init__(members)

    def mem(self, space: Space):
        """The access port of a space."""
        return getattr(self, port_name(space))

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        spaces = list(Space)
        nbytes = {s: C.word_bytes(s, cfg.lanes) for s in spaces}
        for s in spaces:
            assert 8 * nbytes[s] == cfg.word_width(s), "a word is whole bytes"
        word_w = 8 * max(nbytes.values())
        ident = C.identify_reply(cfg, self.build_id, self.memory, self.packing,
                                 onchip_words=self.onchip_words)
        n_ctr = self._n_counters
        ser_bytes = max(len(ident), 1 + 4 * n_ctr, word_w // 8, 1 + C.CRC_VALUE.size)
        # CRC: a word of b bytes goes through the CRC unit in ceil(b / cb) chunks, all of cb
        # bytes but the last (b - cb x (chunks - 1))
        cb = self.crc_bytes
        chunks = {s: -(-nbytes[s] // cb) for s in spaces}
        last_bytes = {s: nbytes[s] - cb * (chunks[s] - 1) for s in spaces}
        m.submodules.crc = crcu = ChunkCRC(
            cb, {last_bytes[s] for s in spaces} | {cb for s in spaces if chunks[s] > 1})

        cin, cout = self.cmd_in, self.cmd_out
        in_fire = cin.valid & cin.ready

        # -- output: one register, loaded from the reply shift register or the records ----
        ob = Signal(8)
        ob_valid = Signal()
        ob_free = ~ob_valid | cout.ready
        m.d.comb += [cout.valid.eq(ob_valid), cout.payload.eq(ob)]
        with m.If(cout.ready):
            m.d.sync += ob_valid.eq(0)

        ser = Signal(8 * ser_bytes)
        ser_left = Signal(range(ser_bytes + 1))
        with m.If(ob_free & (ser_left != 0)):
            m.d.sync += [ob.eq(ser[:8]), ob_valid.eq(1), ser.eq(ser >> 8),
                         ser_left.eq(ser_left - 1)]
        # the shift register may be loaded now (a load overrides this cycle's shift)
        ser_ends = (ser_left == 0) | ((ser_left == 1) & ob_free)

        def send(value, n):
            return [ser.eq(value), ser_left.eq(n)]

        def status(code):
            return send(Const(int(code), 8), 1)

        counters_bytes = Value.cast(self.counters)     # element 0 first: u32 LE in order

        # -- command registers ------------------------------------------------------------
        op = Signal(8)
        hdr = Signal(72)                  # bytes shifted in from the top: LE fields at 0
        hcnt = Signal(4)
        h_space, h_addr, h_count = hdr[0:8], hdr[8:40], hdr[40:72]
        h_topk, h_ntok = hdr[48:56], hdr[56:72]   # RUN's 3 bytes end at the top

        sel_size = Signal(33)
        sel_nbytes = Signal(range(max(nbytes.values()) + 1))
        sel_chunks = Signal(range(max(chunks.values()) + 1))
        sel_last = Signal(range(cb + 1))
        known = Signal()
        with m.Switch(h_space):
            for s in spaces:
                with m.Case(int(s)):
                    m.d.comb += [sel_size.eq(cfg.size(s)), sel_nbytes.eq(nbytes[s]),
                                 sel_chunks.eq(chunks[s]), sel_last.eq(last_bytes[s]),
                                 known.eq(1)]
        in_range = (h_addr + h_count) <= sel_size

        space = Signal(range(len(spaces)))
        cur_addr = Signal(32)
        words_left = Signal(32)           # words (WRITE, READ) or bytes to drop (drains)
        reqs_left = Signal(32)            # READ: addresses still to offer
        wbytes = Signal.like(sel_nbytes)  # bytes per word of the current space
        bi = Signal.like(sel_nbytes)      # byte within the word / token id
        ok = Signal()
        status_r = Signal(8)

        # -- memory write path: word assembly and one shared write register ----------------
        acc = Signal(word_w)
        acc_next = Cat(acc[8:], cin.payload)     # the last nbytes bytes sit at the top
        wr_valid = Signal()
        wr_addr = Signal(32)
        wr_word = Signal(word_w)
        wr_ready = Signal()
        for s in spaces:
            port = self.mem(s).write
            lo = word_w - 8 * nbytes[s]
            m.d.comb += [port.valid.eq(wr_valid & (space == s)),
                         port.payload.addr.eq(wr_addr),
                         port.payload.data.eq(wr_word[lo:lo + cfg.word_width(s)])]
            with m.If(space == s):
                m.d.comb += wr_ready.eq(port.ready)
        with m.If(wr_valid & wr_ready):
            m.d.sync += wr_valid.eq(0)

        # -- memory read path: one outstanding address ------------------------------------
        ra_valid = Signal()               # an address offered since an earlier cycle
        ra_now = Signal()                 # CRC: the next address, offered as a word is taken
        ra_offer = ra_valid | ra_now
        outstanding = Signal()
        ra_ready = Signal()
        rd_valid = Signal()
        rd_word = Signal(word_w)
        rd_ready = Signal()
        for s in spaces:
            acc_port = self.mem(s)
            m.d.comb += [acc_port.read_addr.valid.eq(ra_offer & (space == s)),
                         acc_port.read_addr.payload.eq(cur_addr),
                         acc_port.read_data.ready.eq(rd_ready & (space == s))]
            with m.If(space == s):
                m.d.comb += [ra_ready.eq(acc_port.read_addr.ready),
                             rd_valid.eq(acc_port.read_data.valid),
                             rd_word.eq(acc_port.read_data.payload)]
        ra_fire = ra_offer & ra_ready
        rd_fire = rd_ready & rd_valid

        def fetch_words(take, at_once):
            """READ's and CRC's memory reads: the addresses of the range one at a time, a
            word taken when ``take`` allows; the next address offered the cycle after (READ)
            or ``at_once``, in the cycle that takes the word (CRC; an offer not taken stays
            up from a register, so it holds until taken as a stream's valid must)."""
            m.d.comb += rd_ready.eq(outstanding & take)
            if at_once:
                m.d.comb += ra_now.eq(rd_fire & (reqs_left != 0))
            with m.If(rd_fire):
                m.d.sync += [outstanding.eq(0), words_left.eq(words_left - 1)]
            with m.If((~outstanding | rd_fire) & ~ra_valid & (reqs_left != 0)):
                m.d.sync += ra_valid.eq(1)
            with m.If(ra_fire):             # last: wins over the two above
                m.d.sync += [ra_valid.eq(0), outstanding.eq(1), cur_addr.eq(cur_addr + 1),
                             reqs_left.eq(reqs_left - 1)]

        # -- CRC path: a word taken into the reply shift register (idle then: the status has
        # gone) and shifted through the CRC unit, a chunk a cycle -----------------------------
        w_chunks = Signal.like(sel_chunks)    # chunks per word of the current space
        w_last = Signal.like(sel_last)        # bytes of a word's last chunk
        chunks_left = Signal.like(sel_chunks)
        m.d.comb += [crcu.data.eq(ser[:8 * cb]),
                     crcu.nbytes.eq(Mux(chunks_left == 1, w_last, cb))]

        # -- run path ---------------------------------------------------------------------
        topk = Signal(8)
        tokens_left = Signal(16)
        first = Signal()
        tok = Signal(32)
        last_tok = tokens_left == 1
        m.d.comb += [self.run.payload.token.eq(tok),
                     self.run.payload.k_run.eq(Mux(last_tok, topk, 0)),
                     self.run.payload.first.eq(first),
                     self.run.payload.last.eq(last_tok)]

        waits_host = Signal()             # a state that waits for cmd_in only

        with m.FSM(name="fsm"):
            with m.State("IDLE"):
                m.d.comb += [cin.ready.eq(1), waits_host.eq(1)]
                with m.If(in_fire):
                    m.d.sync += [op.eq(cin.payload), hcnt.eq(0)]
                    with m.Switch(cin.payload):
                        with m.Case(C.Command.IDENTIFY):
                            # the memory's status is the reply's last byte (0 in the ROM)
                            m.d.sync += send(Cat(Const(int.from_bytes(ident[:-1], "little"),
                                                       8 * (len(ident) - 1)),
                                                 self.mem_status), len(ident))
                            m.next = "SEND"
                        with m.Case(C.Command.WRITE, C.Command.READ, C.Command.RUN,
                                    C.Command.CRC):
                            m.next = "HEADER"
                        with m.Case(C.Command.RESET_STATE):
                            m.next = "RESET_STATE"
                        with m.Case(C.Command.COUNTERS):
                            m.d.sync += send(Cat(Const(C.Status.OK, 8), counters_bytes),
                                             1 + 4 * n_ctr)
                            m.next = "SEND"
                        with m.Case(C.Command.RESET_COUNTERS):
                            m.next = "RESET_COUNTERS"
                        with m.Default():
                            m.d.sync += status(C.Status.BAD_COMMAND)
                            m.next = "SEND"

            with m.State("HEADER"):
                m.d.comb += [cin.ready.eq(1), waits_host.eq(1)]
                hlen = Mux(op == C.Command.RUN, C.HEADER_BYTES[C.Command.RUN],
                           C.HEADER_BYTES[C.Command.WRITE])
                with m.If(in_fire):
                    m.d.sync += [hdr.eq(Cat(hdr[8:], cin.payload)), hcnt.eq(hcnt + 1)]
                    with m.If(hcnt == hlen - 1):
                        m.next = "DISPATCH"

            with m.State("DISPATCH"):
                good = known & in_range
                m.d.comb += crcu.start.eq(1)      # every command's: only CRC reads it
                m.d.sync += [space.eq(h_space), cur_addr.eq(h_addr), words_left.eq(h_count),
                             reqs_left.eq(h_count), wbytes.eq(sel_nbytes), bi.eq(0),
                             w_chunks.eq(sel_chunks), w_last.eq(sel_last), chunks_left.eq(0),
                             ok.eq(good),
                             status_r.eq(Mux(~known, C.Status.BAD_SPACE,
                                             Mux(~in_range, C.Status.BAD_RANGE,
                                                 C.Status.OK)))]
                with m.Switch(op):
                    with m.Case(C.Command.WRITE):
                        # an unknown space has no words: no data bytes follow
                        with m.If(~known | (h_count == 0)):
                            m.next = "WRITE_END"
                        with m.Else():
                            m.next = "WRITE_DATA"
                    with m.Case(C.Command.READ, C.Command.CRC):
                        with m.If(~known):
                            m.d.sync += status(C.Status.BAD_SPACE)
                            m.next = "SEND"
                        with m.Elif(~in_range):
                            m.d.sync += status(C.Status.BAD_RANGE)
                            m.next = "SEND"
                        with m.Else():
                            m.d.sync += [*status(C.Status.OK), ra_valid.eq(h_count != 0)]
                            with m.If(op == C.Command.READ):
                                m.next = "READ_DATA"
                            with m.Else():
                                m.next = "CRC_DATA"
                    with m.Default():     # RUN
                        bad = (h_topk > cfg.max_topk) | (h_ntok == 0)
                        # status_r tells DRAIN a RUN's (DONE follows) from a refused one's
                        m.d.sync += [topk.eq(h_topk), tokens_left.eq(h_ntok), first.eq(1),
                                     words_left.eq(h_ntok * 4),
                                     status_r.eq(Mux(bad, C.Status.BAD_ARG, C.Status.OK))]
                        with m.If(bad):
                            m.d.sync += status(C.Status.BAD_ARG)
                            with m.If(h_ntok == 0):
                                m.next = "SEND"
                            with m.Else():
                                m.next = "DRAIN"
                        with m.Else():
                            m.d.sync += status(C.Status.OK)
                            m.next = "RUN_TOKEN"

            with m.State("WRITE_DATA"):
                last_byte = bi == wbytes - 1
                m.d.comb += [cin.ready.eq(~(last_byte & wr_valid & ~wr_ready)),
                             waits_host.eq(1)]
                with m.If(in_fire):
                    m.d.sync += acc.eq(acc_next)
                    with m.If(last_byte):
                        m.d.sync += [bi.eq(0), words_left.eq(words_left - 1),
                                     cur_addr.eq(cur_addr + 1)]
                        with m.If(ok):
                            m.d.sync += [wr_valid.eq(1), wr_addr.eq(cur_addr),
                                         wr_word.eq(acc_next)]
                        with m.If(words_left == 1):
                            m.next = "WRITE_END"
                    with m.Else():
                        m.d.sync += bi.eq(bi + 1)

            with m.State("WRITE_END"):
                with m.If((~wr_valid | wr_ready) & ser_ends):
                    m.d.sync += send(status_r, 1)
                    m.next = "SEND"

            with m.State("READ_DATA"):
                fetch_words(ser_ends, at_once=False)
                with m.If(rd_fire):
                    m.d.sync += send(rd_word, wbytes)
                with m.If((words_left == 0) | ((words_left == 1) & rd_fire)):
                    m.next = "SEND"

            with m.State("CRC_DATA"):
                # a word comes into ser once the status has left it (ser_left, a register:
                # no path from cmd_out.ready to the memories), in the cycle that feeds the
                # previous word's last chunk or later
                fetch_words((ser_left == 0) & (chunks_left <= 1), at_once=True)
                with m.If(chunks_left != 0):
                    m.d.comb += crcu.valid.eq(1)
                    m.d.sync += [ser.eq(ser >> (8 * cb)), chunks_left.eq(chunks_left - 1)]
                with m.If(rd_fire):
                    m.d.sync += [ser.eq(rd_word), ser_left.eq(0), chunks_left.eq(w_chunks)]
                with m.If((words_left == 0) & (chunks_left == 0) & ser_ends):
                    m.d.sync += send(crcu.crc, C.CRC_VALUE.size)
                    m.next = "SEND"

            with m.State("RUN_TOKEN"):
                m.d.comb += [cin.ready.eq(1), waits_host.eq(1)]
                with m.If(in_fire):
                    m.d.sync += [tok.eq(Cat(tok[8:], cin.payload)), bi.eq(bi + 1)]
                    with m.If(bi == 3):
                        m.d.sync += bi.eq(0)
                        m.next = "RUN_BEAT"

            with m.State("RUN_BEAT"):
                m.d.comb += self.run.valid.eq(1)
                with m.If(self.run.ready):
                    m.d.sync += first.eq(0)
                    m.next = "RUN_WAIT"

            with m.State("RUN_WAIT"):
                m.d.comb += [self.records.ready.eq(ob_free & (ser_left == 0)),
                             self.token_done.ready.eq(~self.records.valid)]
                with m.If(self.records.valid & self.records.ready):
                    m.d.sync += [ob.eq(self.records.payload), ob_valid.eq(1)]
                with m.If(self.token_done.valid & self.token_done.ready):
                    m.d.sync += [tokens_left.eq(tokens_left - 1),
                                 words_left.eq((tokens_left - 1) * 4)]
                    with m.If(last_tok):
                        m.next = "RUN_DONE"
                    with m.Elif(self.token_done.payload.ok):
                        m.next = "RUN_TOKEN"
                    with m.Else():
                        m.next = "DRAIN"

            with m.State("DRAIN"):        # drop token ids: after BAD_ARG or an ERROR
                m.d.comb += [cin.ready.eq(1), waits_host.eq(1)]
                with m.If(in_fire):
                    m.d.sync += words_left.eq(words_left - 1)
                    with m.If(words_left == 1):
                        with m.If(status_r == C.Status.OK):
                            m.next = "RUN_DONE"
                        with m.Else():
                            m.next = "SEND"

            with m.State("RUN_DONE"):
                with m.If(ser_ends):
                    m.d.sync += send(Cat(Const(C.RecordType.DONE, 8), counters_bytes),
                                     1 + 4 * n_ctr)
                    m.next = "SEND"

            with m.State("RESET_STATE"):
                m.d.comb += self.reset_state.valid.eq(1)
                with m.If(self.reset_state.ready):
                    m.d.sync += status(C.Status.OK)
                    m.next = "SEND"

            with m.State("RESET_COUNTERS"):
                m.d.comb += self.reset_counters.valid.eq(1)
                with m.If(self.reset_counters.ready):
                    m.d.sync += status(C.Status.OK)
                    m.next = "SEND"

            with m.State("SEND"):
                with m.If(ser_ends):
                    m.next = "IDLE"

        m.d.comb += self.busy.eq(~(waits_host & ~ob_valid & (ser_left == 0) & ~wr_valid))
        return m


def serve_memory(m: Module, mem, access, domain: str = "sync", name: str = "mem"):
    """Answer one space's access port (the processor's ``mem_<space>``) from a
    ``lib.memory.Memory`` ``mem`` (added to ``m`` by the caller): a write port that is always
    ready, and a read port whose word is valid the cycle after its address was taken and held
    (port ``en`` low) until taken. ``read_addr.ready`` is ``~valid | read_data.ready``, so
    it also serves a requester that keeps several reads in flight."""
    wp = mem.write_port(domain=domain)
    rp = mem.read_port(domain=domain)
    valid = Signal(name=f"{name}_rvalid")
    fire = access.read_addr.valid & access.read_addr.ready
    m.d.comb += [
        wp.addr.eq(access.write.payload.addr), wp.data.eq(access.write.payload.data),
        wp.en.eq(access.write.valid), access.write.ready.eq(1),
        access.read_addr.ready.eq(~valid | access.read_data.ready),
        rp.addr.eq(access.read_addr.payload), rp.en.eq(fire),
        access.read_data.valid.eq(valid), access.read_data.payload.eq(rp.data),
    ]
    with m.If(fire):
        m.d[domain] += valid.eq(1)
    with m.Elif(access.read_data.ready):
        m.d[domain] += valid.eq(0)


def serve_memories(m: Module, proc: "CommandProcessor", cfg) -> None:
    """A ``lib.memory.Memory`` for every space of ``cfg`` (a ``CoreConfig``), sized as the
    core's, each behind :func:`serve_memory` on ``proc``'s access port: the processor alone,
    without a core, for tests and link checks."""
    for s in Space:
        mem = memory.Memory(shape=cfg.word_width(s), depth=cfg.size(s), init=[])
        m.submodules[port_name(s)] = mem
        serve_memory(m, mem, proc.mem(s), name=s.name.lower())
