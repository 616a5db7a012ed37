"""The weight store in SDRAM: :class:`SdramWeightStore`, the same ports as the block RAM
store (``weights.WeightMemory``) on the core's and the host's side, and a memory
controller's native port (``controller.SdramController``: LiteDRAM's) on the other.

The core asks for a MATVEC's weights one request at a time, and only as the MATVEC enters
the engine, but between two MATVECs that depend on each other the vector units work for
hundreds of cycles: a store that read only what was asked would leave the SDRAM idle then,
and the SDRAM is what bounds a token on the ULX3S. So this store reads ahead: from the
first address of a run it streams on linearly, beat after beat, as long as its prefetch
FIFO has room, and a request that starts where the last one ended (the compiler lays a
token's weights out in the order its program runs them) finds its words already there.
A request anywhere else is a miss: the store waits for the reads in flight, empties the
FIFO and starts again at the new address, which costs the controller's latency once.

A miss also teaches the read-ahead a jump: the stream ended at one address and went on at
another, as a token's last matrix and the next token's first do. From then on the
read-ahead takes that jump by itself when it reaches the same point (once the requests
have reached it too), so the next token's first words are prefetched during this token's
last vector work, and its first request is a hit. One jump is kept; a wrong guess is a
miss, never a wrong word.
"""

from amaranth import Const, Module, Mux, Signal, signed
from amaranth.hdl import ResetInserter
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from mmfree_fpga import numerics as N

from ..tritpack import TritUnpack, encode_beat
from ..weights import request_layout, write_layout
from .controller import cmd_layout, wdata_layout

__all__ = ["SdramWeightStore", "BeatAssembler"]


def times_const(x, k: int):
    """``x * k`` for a constant ``k`` as a sum of shifted copies of ``x``: Yosys maps a
    ``*`` by a constant onto a MULT18X18D without its registers (~3.9 ns plus the routing
    to the DSP column), a longer path than two carry chains."""
    terms = [x << i for i in range(k.bit_length()) if k >> i & 1]
    if not terms:
        return Const(0, 1)
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


class BeatAssembler(wiring.Component):
    """2-bit weight words from memory beats: ``beats_per_word`` beats of ``beat_bits`` make
    one word, the first beat its least significant bits (so a word is stored as its bytes
    in order, as ``numerics.pack_code_bytes`` lays them out).

    Ports: ``beats`` (In stream, ``beat_bits``), ``words`` (Out stream, ``word_bits``).
    Latency: a word is valid on ``words`` the cycle after the edge that took its last beat.
    Throughput: a beat per cycle; ``beats.ready`` is low only while a finished word waits
    for ``words.ready`` and the next word's beats have filled the shift register again
    (never, when the consumer has room: ``SdramWeightStore`` reserves it).
    """

    def __init__(self, word_bits: int, beat_bits: int = 16):
        if word_bits % beat_bits:
            raise ValueError(f"a {word_bits}-bit word is not whole {beat_bits}-bit beats")
        self.word_bits, self.beat_bits = word_bits, beat_bits
        self.beats_per_word = word_bits // beat_bits
        super().__init__({"beats": In(stream.Signature(beat_bits)),
                          "words": Out(stream.Signature(word_bits))})

    def elaborate(self, platform):
        m = Module()
        n = self.beats_per_word
        shift = Signal(self.word_bits, reset_less=True)
        got = Signal(range(n))
        full = Signal()                       # a whole word waits in `out`
        out = Signal(self.word_bits, reset_less=True)
        # the last beat may enter only if `out` is free or leaves this cycle
        last = got == n - 1
        m.d.comb += [
            self.beats.ready.eq(~last | ~full | self.words.ready),
            self.words.valid.eq(full), self.words.payload.eq(out),
        ]
        with m.If(self.words.valid & self.words.ready):
            m.d.sync += full.eq(0)
        with m.If(self.beats.valid & self.beats.ready):
            word = Signal(self.word_bits)
            m.d.comb += word.eq((shift >> self.beat_bits)
                                | (self.beats.payload << (self.word_bits - self.beat_bits)))
            m.d.sync += shift.eq(word)
            with m.If(last):
                m.d.sync += [got.eq(0), out.eq(word), full.eq(1)]
            with m.Else():
                m.d.sync += got.eq(got + 1)
        return m


class SdramWeightStore(wiring.Component):
    """``depth`` weight words of ``lanes`` 2-bit codes stored in a memory behind a native
    port of ``beat_bits``-bit beats, read ahead into a prefetch FIFO.

    A word takes ``beats_per_word`` consecutive beat addresses from ``base`` + word x
    ``beats_per_word``: with ``packing`` = 0 (2-bit codes) ``2 * lanes / beat_bits`` beats,
    the word's bytes in order (:class:`BeatAssembler` puts them together); with
    ``packing`` = 1 (1.6 bits, ``numerics.pack_words_base3``) ``numerics.packed_word_beats``
    beats, packed by ``tritpack.encode_beat`` as the host writes a word and decoded by
    ``tritpack.TritUnpack`` as it is read. The host's words are 2-bit codes either way.

    Core and host side (``weights.WeightMemory``'s semantics, with any latency):

    - ``req``: In stream of :func:`weights.request_layout`: a run of ``count`` words from
      ``addr``; ``addr + count > depth`` is refused (nothing emitted, ``error`` set),
      ``count`` = 0 emits nothing. A request that starts where the stream goes on (the
      end of the previous run, or at the learned jump's source its target: a *hit*) is
      taken at once, also while earlier words are still owed; any other (a *miss*) is
      taken once every owed word went and every read in flight returned.
    - ``words``: Out stream of ``2 * lanes``-bit words, the requested runs in order; only
      requested words are offered (read-ahead words wait in the FIFO).
    - ``write``: In stream of :func:`weights.write_layout`: the host writes a word; ready
      once its beats are written (``beats_per_word`` write commands and data beats, about a
      beat a cycle), served only while no word is owed (between runs). It stops and drops
      the read-ahead, so the next request is a miss and sees the written word.
    - ``read_addr`` / ``read_data``: the host reads a word (``command.mem_access_signature``,
      one read at a time), between runs, through the same beats, decoder and FIFO as a
      run; also a miss for the next request. An address >= ``depth`` reads what the memory
      holds there (the processor range-checks READ).
    - ``error``: Out, sticky: a refused request or write happened.

    Memory side (``controller.SdramController``'s native port):

    - ``cmd``: Out stream of :func:`controller.cmd_layout` (``mem_addr_bits``).
    - ``wdata``: Out stream of :func:`controller.wdata_layout`: the data of each write command,
      in order; a beat is offered only after its command was taken.
    - ``rdata``: In stream of ``beat_bits``: the data of each read command, in order. The
      store never lowers ``rdata.ready`` (LiteDRAM's native port ignores it): before it
      issues a word's first read it reserves that word's place in the FIFO.

    The embedding (``embed_words`` > 0; ``beat_bits`` = 16, an int16 entry a beat) lives
    right after the weights, from beat :attr:`embed_base`:

    - ``embed_req``: In stream of :func:`weights.request_layout` (``embed_addr_bits``,
      ``embed_count_bits``): the core's EMBED row; ``embed_data``: Out stream of the
      entries in order, one per returned beat. ``embed_data.ready`` is ignored: the
      consumer takes a beat whenever one is valid (the core writes them into a buffer).
      The request pauses the read-ahead (its words already in flight land first), so a
      row costs its ``count`` beats plus the controller's latency, and the weight stream
      resumes where it stopped: no miss.
    - ``embed_write``, ``embed_read_addr`` / ``embed_read_data``: the host's EMBED port
      (``command.mem_access_signature``), an entry per beat; they pause the read-ahead as a
      row does. An address past the embedding is refused (``error``), reads return what
      the memory holds (the processor range-checks).

    Counting (for ``top.Accelerator``'s memory counters): ``count_en`` (In) gates,
    ``count_clear`` (In) zeroes ``beats`` (Out, 32 bits: read beats returned),
    ``misses`` (Out, 32: requests that restarted the stream) and ``full`` (Out, 32: cycles
    the read-ahead stopped because the FIFO was full).

    Requests pass a two-entry request register (a ``lib.fifo.SyncFIFO``; ``req.ready`` is
    its ``w_rdy``, a register) and are served from it a cycle after they are taken; one
    jump can be pending (a request for the jump's target made before the stream took the
    jump for the previous one waits for it).

    Latency: a miss's first word is valid on ``words`` the controller's read latency plus
    ``beats_per_word`` + 4 cycles after the request's edge; a hit's words are there a
    cycle after it when the read-ahead got them. Throughput: a word per ``beats_per_word`` beats of
    the memory's bandwidth; the FIFO (``prefetch_words`` words, a
    ``lib.fifo.SyncFIFOBuffered``: block RAM) hands the core a word per cycle.
    """

    def __init__(self, lanes: int, depth: int, *, addr_bits: int = 24, count_bits: int = 20,
                 mem_addr_bits: int = 24, beat_bits: int = 16, prefetch_words: int = 256,
                 base: int = 0, packing: int = 0, embed_words: int = 0,
                 embed_addr_bits: int = 20, embed_count_bits: int = 13):
        self.lanes, self.depth = lanes, depth
        self.addr_bits, self.count_bits = addr_bits, count_bits
        self.mem_addr_bits, self.beat_bits = mem_addr_bits, beat_bits
        self.word_bits = N.CODE_BITS * lanes
        self.packing = packing
        self.beats_per_word = N.word_beats(lanes, bool(packing), beat_bits)
        if base + depth * self.beats_per_word > 1 << mem_addr_bits:
            raise ValueError(f"{depth:,} words of {self.beats_per_word} beats from beat {base} "
                             f"do not fit the memory's 2^{mem_addr_bits} beats")
        if prefetch_words < 2:
            raise ValueError("prefetch_words must be at least 2")
        self.prefetch_words, self.base = prefetch_words, base
        self.embed_words, self.embed_count_bits = embed_words, embed_count_bits
        #: the embedding's first beat: right after the weights
        self.embed_base = base + depth * self.beats_per_word
        if self.embed_base + embed_words > 1 << mem_addr_bits:
            raise ValueError(f"the weights and {embed_words:,} embedding entries do not fit "
                             f"the memory's 2^{mem_addr_bits} beats")
        embed = {}
        if embed_words:
            embed = {
                "embed_req": In(stream.Signature(request_layout(embed_addr_bits,
                                                                embed_count_bits))),
                "embed_data": Out(stream.Signature(beat_bits)),
                "embed_write": In(stream.Signature(write_layout(beat_bits, embed_addr_bits))),
                "embed_read_addr": In(stream.Signature(embed_addr_bits)),
                "embed_read_data": Out(stream.Signature(beat_bits)),
            }
        super().__init__({
            **embed,
            "req": In(stream.Signature(request_layout(addr_bits, count_bits))),
            "words": Out(stream.Signature(self.word_bits)),
            "write": In(stream.Signature(write_layout(self.word_bits, addr_bits))),
            "read_addr": In(stream.Signature(addr_bits)),
            "read_data": Out(stream.Signature(self.word_bits)),
            "error": Out(1),
            "cmd": Out(stream.Signature(cmd_layout(mem_addr_bits))),
            "wdata": Out(stream.Signature(wdata_layout(beat_bits))),
            "rdata": In(stream.Signature(beat_bits)),
            "count_en": In(1), "count_clear": In(1),
            "beats": Out(32), "misses": Out(32), "full": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        B, P = self.beats_per_word, self.prefetch_words
        has_embed = self.embed_words > 0
        E = 1 << self.embed_count_bits         # a row's most entries, + 1
        flush = Signal()       # empties the FIFO and the decoder (nothing is in flight then)
        decoder = (TritUnpack(self.lanes, self.beat_bits) if self.packing
                   else BeatAssembler(self.word_bits, self.beat_bits))
        m.submodules.dec = dec = ResetInserter(flush)(decoder)
        m.submodules.fifo = fifo = ResetInserter(flush)(SyncFIFOBuffered(
            width=self.word_bits, depth=P))

        # modes: the read-ahead runs (RUN), or one access has the port. The side accesses
        # (the embedding) pause the read-ahead; a host access to the weights ends it.
        RUN, HREAD, HWRITE, EROW, EREAD, EWRITE = range(6)
        mode = Signal(range(6))
        side = (mode == EROW) | (mode == EREAD) | (mode == EWRITE)
        to_side = (mode == EROW) | (mode == EREAD)       # their beats bypass the decoder

        # -- beats back: always taken (a word's FIFO place was reserved at its issue) -------
        m.d.comb += [self.rdata.ready.eq(1),
                     dec.beats.valid.eq(self.rdata.valid & ~flush & ~to_side),
                     dec.beats.payload.eq(self.rdata.payload),
                     fifo.w_en.eq(dec.words.valid), fifo.w_data.eq(dec.words.payload),
                     dec.words.ready.eq(fifo.w_rdy)]

        # -- bookkeeping -----------------------------------------------------------------
        inflight = Signal(range(P * B + E + 1))   # read beats issued, not returned
        reserved = Signal(range(P + 1))         # words whose reads began, not yet taken out
        owed = Signal(self.count_bits + 1 + ceil_log2(P + 1))   # words the core was promised
        streaming = Signal()                    # the read-ahead runs from `ptr` on
        run_end = Signal(self.addr_bits + 1)    # word after the last accepted request
        ptr = Signal(self.mem_addr_bits)        # next beat address to read
        beat = Signal(range(B))                 # its index within its word
        next_word = Signal(self.addr_bits + 2)  # the word it belongs to (read-ahead)
        h_left = Signal(range(max(B, E) + 1))     # the access's commands to issue
        h_data_left = Signal(range(B + 1))      # a write's data beats to hand over
        h_shift = Signal(self.word_bits, reset_less=True)
        eptr = Signal(self.mem_addr_bits)       # the side access's next beat address
        e_back = Signal(range(E + 1))   # its read beats still to come back
        e_word = Signal(self.beat_bits)         # a host EMBED read's entry, held
        e_held = Signal()

        issue = Signal()        # a read command goes this cycle
        took_word = Signal()    # a word left the FIFO this cycle
        returned = self.rdata.valid
        m.d.sync += inflight.eq(inflight + issue - returned)
        with m.If(flush):
            m.d.sync += reserved.eq(0)
        with m.Else():
            m.d.sync += reserved.eq(reserved + (issue & (beat == 0) & ~side) - took_word)

        # -- the core's side ---------------------------------------------------------------
        # The request register: requests wait in a two-entry FIFO, with what the store needs
        # of them computed on the way in (the run's end, the range check, the first beat
        # address: a carry chain and a multiply). Its w_rdy is a register, so no path runs
        # from the store's state back into the core, and none from the core's request
        # through a multiply into the read pointer: at 100 MHz on the ECP5 both were longer
        # than a cycle. A request costs a cycle more; a run is hundreds of words.
        entry = data.StructLayout({
            "addr": self.addr_bits, "count": self.count_bits, "end": self.addr_bits + 1,
            "in_range": 1, "empty": 1, "beat": self.mem_addr_bits})
        m.submodules.req_fifo = rq = SyncFIFO(width=entry.size, depth=2)
        inc = self.req.payload
        new = data.View(entry, rq.w_data)
        m.d.comb += [
            rq.w_en.eq(self.req.valid), self.req.ready.eq(rq.w_rdy),
            new.addr.eq(inc.addr), new.count.eq(inc.count),
            new.end.eq(inc.addr + inc.count), new.in_range.eq(new.end <= self.depth),
            new.empty.eq(inc.count == 0), new.beat.eq(self.base + times_const(inc.addr, B)),
        ]
        req = data.View(entry, rq.r_data)
        req_valid = rq.r_rdy
        req_pending = rq.r_rdy | self.req.valid          # one waits, or comes
        # nothing owed, nothing in flight, and the read-ahead between words: a miss taken
        # then needs no guard on the read-ahead's issue (it is held at the word boundary)
        quiet = Signal()
        m.d.comb += quiet.eq((owed == 0) & (inflight == 0) & (mode == RUN)
                             & ((beat == 0) | ~streaming))
        in_range = req.in_range
        # The jump the read-ahead takes: learned at a miss (the stream ended at `jump_from`
        # and the next request began at `jump_to`, as a token's last matrix and the next
        # token's first do), taken each time the read-ahead reaches `jump_from` again, so
        # the next token's words stream in while this token ends. A wrong guess is a miss.
        jump_from = Signal(self.addr_bits + 1)
        jump_to = Signal(self.addr_bits + 1)
        jump_valid = Signal()
        at_jump = jump_valid & (run_end == jump_from)
        jump_ptr = Signal(self.mem_addr_bits)          # jump_to's first beat
        armed, jumped = Signal(), Signal()
        # One jump can be pending (`armed`): a second request at jump_to before the stream
        # took the first jump waits for it (else the stream would go on linearly there).
        hit_now = streaming & Mux(at_jump, (req.addr == jump_to) & ~armed,
                                  req.addr == run_end)
        # The hit is decided a cycle before it is acted on (the compares are long): the
        # head request is served once it has waited a cycle (`settled`), by the hit of
        # the previous cycle's state. That can only be stale towards a miss (the state a
        # hit depends on changes only when a request is taken, except a jump taken, which
        # can turn a miss into a hit): a stale miss waits a cycle more, or, with the store
        # quiet, restarts the stream there, which is never a wrong word.
        settled, hit = Signal(), Signal()
        m.d.sync += [settled.eq(req_valid & ~rq.r_en), hit.eq(hit_now)]
        m.d.comb += rq.r_en.eq(settled & Mux(in_range & ~req.empty, hit | quiet, 1))
        accept = req_valid & rq.r_en
        miss = Signal()
        m.d.comb += miss.eq(accept & in_range & ~req.empty & ~hit)
        with m.If(miss & streaming & (req.addr != run_end)):
            m.d.sync += [jump_from.eq(run_end), jump_to.eq(req.addr), jump_ptr.eq(req.beat),
                         jump_valid.eq(1)]
        # words promised minus words whose reads began (> 0: owed words still to issue)
        unstarted = Signal(signed(self.addr_bits + 3))
        delivering = (mode == RUN) | side
        m.d.sync += owed.eq(owed + Mux(accept & in_range, req.count, 0)
                            - (took_word & delivering))
        with m.If(accept & ~in_range):
            m.d.sync += self.error.eq(1)
        with m.If(accept & in_range & ~req.empty):
            m.d.sync += run_end.eq(req.end)
        m.d.comb += flush.eq(miss)
        m.d.comb += [
            self.words.valid.eq(fifo.r_rdy & (owed != 0) & delivering),
            self.words.payload.eq(fifo.r_data),
        ]

        # -- side requests waiting: the read-ahead pauses for them --------------------------
        side_wants = Const(0, 1)
        if has_embed:
            side_wants = (self.embed_req.valid | self.embed_write.valid
                          | self.embed_read_addr.valid)

        # -- commands: the read-ahead, or the access's --------------------------------------
        room = (beat != 0) | (reserved < P)
        # a miss waits: once every owed word's reads went, the read-ahead stops for it
        past_end = (beat == 0) & (unstarted <= 0)
        hold = req_valid & settled & ~hit & past_end
        # At the jump's source: jump if a request already went on at jump_to (`armed`) or
        # the requests have reached the source and nothing is owed past it (`jumped`: the
        # stream went ahead of them); go on linearly if words are owed there (a request
        # ran past the source); else wait there for the requests.
        at_source = (streaming & (mode == RUN) & jump_valid & (beat == 0)
                     & (next_word == jump_from))
        # (a miss at the same edge overrides the jump: its assignments come after)
        jump_now = at_source & (armed | ((run_end == jump_from) & (unstarted <= 0)))
        cross = at_source & (unstarted <= 0) | jump_now         # no read this cycle
        with m.If(jump_now):
            m.d.sync += [next_word.eq(jump_to), ptr.eq(jump_ptr),
                         armed.eq(0), jumped.eq(~armed)]
        with m.If(accept & hit & at_jump):
            with m.If(jumped):
                m.d.sync += jumped.eq(0)
            with m.Elif(~jump_now):
                m.d.sync += armed.eq(1)
            with m.Else():       # the jump goes at this very edge: it was this request's
                m.d.sync += [armed.eq(0), jumped.eq(0)]
        with m.If(miss):
            m.d.sync += [armed.eq(0), jumped.eq(0), streaming.eq(1), ptr.eq(req.beat),
                         beat.eq(0), next_word.eq(req.addr)]
        # No ~flush term: a miss is taken only when quiet, which holds the read-ahead
        # (`hold`: past the owed words at a word boundary), so none issues at its edge.
        ra_valid = streaming & (mode == RUN) & room & ~hold & ~side_wants & ~cross
        cmd = self.cmd.payload
        with m.Switch(mode):
            with m.Case(RUN):
                m.d.comb += [self.cmd.valid.eq(ra_valid), cmd.we.eq(0), cmd.addr.eq(ptr)]
            with m.Case(HREAD, HWRITE):
                m.d.comb += [self.cmd.valid.eq(h_left != 0), cmd.we.eq(mode == HWRITE),
                             cmd.addr.eq(ptr)]
            with m.Default():
                m.d.comb += [self.cmd.valid.eq(h_left != 0), cmd.we.eq(mode == EWRITE),
                             cmd.addr.eq(eptr)]
        fire = self.cmd.valid & self.cmd.ready
        m.d.comb += issue.eq(fire & ~cmd.we)
        with m.If(fire):
            with m.If(side):
                m.d.sync += eptr.eq(eptr + 1)
            with m.Else():
                m.d.sync += [ptr.eq(ptr + 1), beat.eq(Mux(beat == B - 1, 0, beat + 1))]
                with m.If(beat == B - 1):
                    m.d.sync += next_word.eq(next_word + 1)
            with m.If(mode != RUN):
                m.d.sync += h_left.eq(h_left - 1)
        full_stall = streaming & (mode == RUN) & ~room
        started = issue & (beat == 0) & (mode == RUN)
        new_words = Mux(accept & in_range, req.count, 0)
        with m.If(miss):
            m.d.sync += unstarted.eq(req.count)
        with m.Else():
            m.d.sync += unstarted.eq(unstarted + new_words - started)

        # -- starting an access: only with nothing in flight --------------------------------
        free = (mode == RUN) & (inflight == 0)
        host_quiet = (owed == 0) & ~req_pending
        wr = self.write.payload
        # a word written or read ends the read-ahead: stop it, let the reads in flight land
        host_wants = (self.write.valid | self.read_addr.valid) & (mode == RUN) & (owed == 0)
        with m.If(host_wants & ~req_pending & ~side_wants):
            m.d.sync += streaming.eq(0)
        start_write = Signal()
        start_read = Signal()
        w_ok = wr.addr < self.depth
        if has_embed:
            er, ew = self.embed_req, self.embed_write
            start_erow = free & er.valid
            start_ewrite = free & ~er.valid & ew.valid
            start_eread = free & ~er.valid & ~ew.valid & self.embed_read_addr.valid
            ew_ok = ew.payload.addr < self.embed_words
            m.d.comb += [er.ready.eq(start_erow), self.embed_read_addr.ready.eq(start_eread)]
            with m.If(start_erow):
                m.d.sync += [mode.eq(EROW), h_left.eq(er.payload.count),
                             e_back.eq(er.payload.count),
                             eptr.eq(self.embed_base + er.payload.addr)]
            with m.If(start_ewrite & ew_ok):
                m.d.sync += [mode.eq(EWRITE), h_left.eq(1), h_data_left.eq(1),
                             eptr.eq(self.embed_base + ew.payload.addr),
                             h_shift.eq(ew.payload.data)]
            with m.If(start_ewrite & ~ew_ok):
                m.d.sync += self.error.eq(1)
            with m.If(start_eread):
                m.d.sync += [mode.eq(EREAD), h_left.eq(1), e_back.eq(1),
                             eptr.eq(self.embed_base + self.embed_read_addr.payload)]
            # the side accesses' returns: a row's entries straight out, a host entry held
            m.d.comb += [self.embed_data.valid.eq((mode == EROW) & returned),
                         self.embed_data.payload.eq(self.rdata.payload),
                         self.embed_read_data.valid.eq(e_held),
                         self.embed_read_data.payload.eq(e_word)]
            with m.If(to_side & returned):
                m.d.sync += e_back.eq(e_back - 1)
            with m.If((mode == EROW) & (e_back == 0) & (h_left == 0)):
                m.d.sync += mode.eq(RUN)
            with m.If((mode == EREAD) & returned):
                m.d.sync += [e_word.eq(self.rdata.payload), e_held.eq(1)]
            with m.If(e_held & self.embed_read_data.ready):
                m.d.sync += [e_held.eq(0), mode.eq(RUN)]
            e_done = (mode == EWRITE) & (h_data_left == 0)
            m.d.comb += ew.ready.eq(e_done | (start_ewrite & ~ew_ok))
            with m.If(e_done):
                m.d.sync += mode.eq(RUN)
            weights_free = free & ~side_wants
        else:
            weights_free = free
        # A host access's first beat address is registered a cycle after the access
        # appears (its payload holds while it waits), so no multiply lies on its start.
        host_beat = Signal(self.mem_addr_bits)
        w_settled, r_settled = Signal(), Signal()
        m.d.sync += [
            host_beat.eq(self.base + times_const(Mux(self.write.valid, wr.addr,
                                                     self.read_addr.payload), B)),
            w_settled.eq(self.write.valid & ~self.write.ready),
            r_settled.eq(self.read_addr.valid & ~self.write.valid & ~self.read_addr.ready),
        ]
        m.d.comb += [
            start_write.eq(self.write.valid & w_settled & weights_free & host_quiet
                           & ~streaming),
            start_read.eq(self.read_addr.valid & r_settled & ~self.write.valid
                          & weights_free & host_quiet & ~streaming),
        ]
        with m.If(start_write):
            with m.If(w_ok):
                m.d.comb += flush.eq(1)
                m.d.sync += [mode.eq(HWRITE), h_left.eq(B), h_data_left.eq(B), beat.eq(0),
                             ptr.eq(host_beat), h_shift.eq(wr.data)]
            with m.Else():
                m.d.sync += self.error.eq(1)
        # the write is acknowledged once its last data beat went (or at once when refused)
        w_done = (mode == HWRITE) & (h_data_left == 0)
        m.d.comb += self.write.ready.eq(w_done | (start_write & ~w_ok))
        with m.If(w_done):
            m.d.sync += mode.eq(RUN)
        # data beats: each after its command (LiteDRAM takes them after the command anyway)
        if self.packing:       # a beat holds 5 codes a byte, zero codes past the word's end
            step = N.CODE_BITS * N.TRITS_PER_BYTE * (self.beat_bits // 8)
            beat_data = encode_beat(h_shift[:step], self.beat_bits)
        else:
            step = self.beat_bits
            beat_data = h_shift[:self.beat_bits]
        writing = (mode == HWRITE) | (mode == EWRITE)
        m.d.comb += [
            self.wdata.valid.eq(writing & (h_data_left > h_left)),
            self.wdata.payload.data.eq(Mux(mode == EWRITE, h_shift[:self.beat_bits],
                                           beat_data)),
            self.wdata.payload.we.eq(-1),
        ]
        with m.If(self.wdata.valid & self.wdata.ready):
            m.d.sync += [h_data_left.eq(h_data_left - 1), h_shift.eq(h_shift >> step)]

        m.d.comb += self.read_addr.ready.eq(start_read)
        with m.If(start_read):
            m.d.comb += flush.eq(1)
            m.d.sync += [mode.eq(HREAD), h_left.eq(B), beat.eq(0),
                         ptr.eq(host_beat)]
        m.d.comb += [self.read_data.valid.eq((mode == HREAD) & fifo.r_rdy),
                     self.read_data.payload.eq(fifo.r_data)]
        with m.If(self.read_data.valid & self.read_data.ready):
            m.d.sync += mode.eq(RUN)

        m.d.comb += [
            took_word.eq(fifo.r_rdy & Mux(mode == HREAD, self.read_data.ready,
                                          delivering & (owed != 0) & self.words.ready)),
            fifo.r_en.eq(took_word),
        ]

        # -- counters ----------------------------------------------------------------------
        n_beats, n_miss, n_full = Signal(32), Signal(32), Signal(32)
        with m.If(self.count_clear):
            m.d.sync += [n_beats.eq(0), n_miss.eq(0), n_full.eq(0)]
        with m.Elif(self.count_en):
            m.d.sync += [n_beats.eq(n_beats + returned), n_miss.eq(n_miss + miss),
                         n_full.eq(n_full + full_stall)]
        m.d.comb += [self.beats.eq(n_beats), self.misses.eq(n_miss), self.full.eq(n_full)]
        return m
