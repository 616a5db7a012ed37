"""The weight store split in two: :class:`HybridWeightStore`, the first ``onchip_words``
words in block RAM (``weights.WeightMemory``), the rest in SDRAM
(``sdram.weight_store.SdramWeightStore``), behind the one stream pair the core reads
(``weight_req`` / ``weight_words``) and the host's WEIGHTS port, with
``WeightMemory(host_read=True)``'s signature. The SDRAM bounds a token on the ULX3S (a
128-lane word is 16 beats of its 16-bit bus), so every word kept on chip is bandwidth the
SDRAM does not spend; the compiler (``compile_model(onchip_words=...)``) picks which
BitLinears live below the boundary and lays the rest out above it in execution order, so
the SDRAM store's read-ahead runs through them as the program asks for them.
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from mmfree_fpga import numerics as N

from .sdram.weight_store import SdramWeightStore
from .weights import WeightMemory, request_layout, write_layout

__all__ = ["HybridWeightStore"]


class HybridWeightStore(wiring.Component):
    """``depth`` weight words of ``lanes`` 2-bit codes: word addresses ``[0, onchip_words)``
    in a ``WeightMemory`` of ``onchip_words`` words (block RAM, optional ``init``),
    ``[onchip_words, depth)`` in ``sdram_store``, an ``SdramWeightStore`` of
    ``depth - onchip_words`` words that sees ``address - onchip_words``.

    ``sdram_store`` is built by the caller (its beat width, packing, prefetch, base and
    memory address width are the caller's) and kept as :attr:`sdram`; this component adds
    it as its submodule ``sdram`` and drives its core- and host-side ports, and the caller
    connects its memory side (``cmd``, ``wdata``, ``rdata``) to the controller and drives
    or reads its counters (``count_en``, ``count_clear``, ``beats``, ``misses``, ``full``),
    all as on a bare ``SdramWeightStore``. Its ``lanes``, ``addr_bits`` and ``count_bits``
    must be this component's, its ``depth`` ``depth - onchip_words``; 0 < ``onchip_words``
    < ``depth`` (with no split, use one of the two stores alone).

    Ports (``WeightMemory(host_read=True)``'s names, shapes and semantics, except where
    said):

    - ``req``: In stream of :func:`weights.request_layout`: ``count`` words from ``addr``.
      A request lies in one region: ``addr + count <= onchip_words`` goes to the block RAM,
      ``addr >= onchip_words`` to the SDRAM. One with ``addr + count > depth``, or one that
      straddles the boundary (``addr < onchip_words < addr + count``), is refused: taken at
      once, nothing emitted, ``error`` set. ``count`` = 0 is taken at once and emits
      nothing. Any other is taken when its store takes it and the route FIFO has room.
    - ``words``: Out stream of ``2 * lanes``-bit words, the requested runs in request
      order, whichever store holds them.
    - ``write``: In stream of :func:`weights.write_layout`, routed by address: below the
      boundary the block RAM's write (ready at once), above it the SDRAM store's (ready
      once its beats are written); ``addr >= depth`` is refused (taken at once, ``error``
      set). Between runs only, as on either store.
    - ``read_addr`` / ``read_data``: the host's reads (``command.mem_access_signature``),
      routed by address (``addr >= depth`` goes to the SDRAM store: an unspecified word,
      never a hang), one at a time: the next address is taken no earlier than the cycle
      after the edge that took the previous word (the processor asks no more). Between
      runs only. Latency: the block RAM's ``WeightMemory.HOST_READ_LATENCY`` (2), the SDRAM
      store's miss latency.
    - ``error``: Out, sticky: a refused request or write happened (here or, never expected,
      in either store).

    Ordering: a small FIFO (``route_depth`` entries, default :attr:`ROUTE_DEPTH` = 4, of
    {store, count}) holds one entry per request handed to a store, pushed at the edge
    that hands it over. ``words`` offers the head entry's store's words only (the other
    store's words wait in its own FIFO); a counter of the head's words taken pops the
    entry at its last word, and the next entry's store is offered from the next cycle on,
    so a switch between stores costs no cycle.

    Outstanding requests: a request is handed to its store while the words of earlier ones
    (of either store) still flow, so the SDRAM store starts a run (a miss: its controller
    latency) while the engine takes block RAM words, and the block RAM fills its FIFO while
    SDRAM words flow. What bounds the requests outstanding (taken, words not all out):

    - the route FIFO: ``req.ready`` is low while it is full, so at most ``route_depth``
      (the only bound for SDRAM hits, which that store takes at once however many words
      it owes);
    - the block RAM store takes its next request at the edge that issues its current
      run's last read, and issues reads only while its 4-word output FIFO has room: at
      most 5 of its runs outstanding (4 one-word runs issued, one waiting);
    - the SDRAM store takes a miss only once it owes no word and every read returned: a
      miss waits for the consumer to take every earlier SDRAM word.

    No deadlock: a store only ever waits for the words of its own earlier requests, which
    all lie ahead of the waiting request in the route FIFO, and the head's words always
    come. The core keeps at most two requests outstanding (the engine's front and back
    end), so a route FIFO of 2 would never stop it; 4 costs a few flip-flops. The SDRAM
    store's read-ahead needs no request: after a run it streams on from where the run
    ended (while its prefetch FIFO has room), so the next SDRAM matrix in execution order
    is a hit with its words already there, however many block RAM runs come between.

    Latency: requests pass a two-entry request register (``lib.fifo.SyncFIFO``:
    ``req.ready`` is its ``w_rdy``, a register; the route and the address relative to the
    store are computed on the way in); from it a request is handed to its store a cycle
    after it was taken, at the earliest, and its first word is valid on ``words`` the
    store's latency after that (``WeightMemory.LATENCY`` = 4; the SDRAM store's own, with
    its request register), but never before the earlier requests' words went.
    Throughput: one word per cycle while both stores have the words (across requests and
    across stores); the SDRAM's words at its memory's bandwidth.

    Resources: the two stores, the route FIFO (``route_depth`` x (1 + ``count_bits``)
    bits), a ``count_bits`` counter, a ``2 * lanes``-bit 2:1 mux on ``words`` and one on
    ``read_data``, three ``addr_bits`` subtractors of a constant and the range
    comparators. The request path (address compare, subtract, the SDRAM store's hit
    compare) is combinational from ``req.payload`` to ``req.ready``.
    """

    ROUTE_DEPTH = 4

    def __init__(self, lanes: int, depth: int, onchip_words: int,
                 sdram_store: SdramWeightStore, addr_bits: int = 24, count_bits: int = 20,
                 route_depth: int = ROUTE_DEPTH, init=()):
        if depth < 2 or depth > 1 << addr_bits:
            raise ValueError(f"depth must be in 2 .. 2^addr_bits ({1 << addr_bits})")
        if not 0 < onchip_words < depth:
            raise ValueError(f"onchip_words must be in 1 .. depth - 1 ({depth - 1}); "
                             "with no split use one store alone")
        sd = sdram_store
        for what, have, want in (("lanes", sd.lanes, lanes),
                                 ("depth", sd.depth, depth - onchip_words),
                                 ("addr_bits", sd.addr_bits, addr_bits),
                                 ("count_bits", sd.count_bits, count_bits)):
            if have != want:
                raise ValueError(f"the SDRAM store's {what} is {have}, must be {want}")
        if route_depth < 1:
            raise ValueError("route_depth must be at least 1")
        self.lanes, self.depth, self.onchip_words = lanes, depth, onchip_words
        self.addr_bits, self.count_bits = addr_bits, count_bits
        self.word_bits = N.CODE_BITS * lanes
        self.route_depth = route_depth
        self.init = list(init)
        #: the SDRAM store (the caller connects its memory side and counters)
        self.sdram = sd
        super().__init__({
            "req": In(stream.Signature(request_layout(addr_bits, count_bits))),
            "words": Out(stream.Signature(self.word_bits)),
            "write": In(stream.Signature(write_layout(self.word_bits, addr_bits))),
            "error": Out(1),
            "read_addr": In(stream.Signature(addr_bits)),
            "read_data": Out(stream.Signature(self.word_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        depth, split = self.depth, self.onchip_words
        m.submodules.onchip = oc = WeightMemory(self.lanes, split, addr_bits=self.addr_bits,
                                                count_bits=self.count_bits, init=self.init,
                                                host_read=True)
        m.submodules.sdram = sd = self.sdram
        m.submodules.route = route = SyncFIFO(width=1 + self.count_bits,
                                              depth=self.route_depth)
        err = Signal()
        m.d.comb += self.error.eq(err | oc.error | sd.error)

        # -- requests: routed by address, one route entry per request handed on ----------
        # A two-entry request register (w_rdy a register) with the routing decided on the
        # way in, so neither the stores' readiness nor the address arithmetic lies on a
        # path from the core's request: at 100 MHz on the ECP5 that path was too long.
        entry = data.StructLayout({"addr": self.addr_bits, "count": self.count_bits,
                                   "to_sd": 1, "refused": 1, "handed": 1})
        m.submodules.req_fifo = rq = SyncFIFO(width=entry.size, depth=2)
        inc = self.req.payload
        new = data.View(entry, rq.w_data)
        end = Signal(self.addr_bits + 1)
        m.d.comb += [
            rq.w_en.eq(self.req.valid), self.req.ready.eq(rq.w_rdy),
            end.eq(inc.addr + inc.count),
            new.to_sd.eq(inc.addr >= split),
            new.refused.eq((end > depth) | (~new.to_sd & (end > split))),
            new.handed.eq(~new.refused & (inc.count != 0)),
            new.addr.eq(Mux(new.to_sd, inc.addr - split, inc.addr)),
            new.count.eq(inc.count),
        ]
        req = data.View(entry, rq.r_data)
        to_sd = req.to_sd
        offer = rq.r_rdy & req.handed & route.w_rdy
        m.d.comb += [
            oc.req.valid.eq(offer & ~to_sd),
            oc.req.payload.addr.eq(req.addr), oc.req.payload.count.eq(req.count),
            sd.req.valid.eq(offer & to_sd),
            sd.req.payload.addr.eq(req.addr), sd.req.payload.count.eq(req.count),
            rq.r_en.eq(Mux(req.handed,
                           route.w_rdy & Mux(to_sd, sd.req.ready, oc.req.ready), 1)),
            route.w_en.eq(offer & Mux(to_sd, sd.req.ready, oc.req.ready)),
            route.w_data.eq(Cat(to_sd, req.count)),
        ]
        with m.If(rq.r_rdy & req.refused):
            m.d.sync += err.eq(1)

        # -- words: the head entry's store only ------------------------------------------
        head_sd = route.r_data[0]
        head_count = route.r_data[1:]
        taken = Signal(self.count_bits)          # the head run's words already out
        m.d.comb += [
            self.words.valid.eq(route.r_rdy & Mux(head_sd, sd.words.valid, oc.words.valid)),
            self.words.payload.eq(Mux(head_sd, sd.words.payload, oc.words.payload)),
            oc.words.ready.eq(route.r_rdy & ~head_sd & self.words.ready),
            sd.words.ready.eq(route.r_rdy & head_sd & self.words.ready),
        ]
        with m.If(self.words.valid & self.words.ready):
            with m.If(taken + 1 == head_count):
                m.d.comb += route.r_en.eq(1)
                m.d.sync += taken.eq(0)
            with m.Else():
                m.d.sync += taken.eq(taken + 1)

        # -- host writes: routed by address ----------------------------------------------
        wr = self.write.payload
        w_sd = wr.addr >= split
        w_ok = wr.addr < depth
        m.d.comb += [
            oc.write.valid.eq(self.write.valid & ~w_sd),
            oc.write.payload.addr.eq(wr.addr), oc.write.payload.data.eq(wr.data),
            sd.write.valid.eq(self.write.valid & w_sd & w_ok),
            sd.write.payload.addr.eq(wr.addr - split), sd.write.payload.data.eq(wr.data),
            self.write.ready.eq(Mux(w_sd, Mux(w_ok, sd.write.ready, 1), oc.write.ready)),
        ]
        with m.If(self.write.valid & ~w_ok):
            m.d.sync += err.eq(1)

        # -- host reads: routed by address, one outstanding ------------------------------
        h_busy = Signal()                        # an address went, its word not yet
        h_sd = Signal()                          # ... to the SDRAM store
        ra = self.read_addr.payload
        r_sd = ra >= split
        m.d.comb += [
            oc.read_addr.valid.eq(self.read_addr.valid & ~h_busy & ~r_sd),
            oc.read_addr.payload.eq(ra),
            sd.read_addr.valid.eq(self.read_addr.valid & ~h_busy & r_sd),
            sd.read_addr.payload.eq(ra - split),
            self.read_addr.ready.eq(~h_busy & Mux(r_sd, sd.read_addr.ready,
                                                  oc.read_addr.ready)),
            self.read_data.valid.eq(h_busy & Mux(h_sd, sd.read_data.valid,
                                                 oc.read_data.valid)),
            self.read_data.payload.eq(Mux(h_sd, sd.read_data.payload, oc.read_data.payload)),
            oc.read_data.ready.eq(h_busy & ~h_sd & self.read_data.ready),
            sd.read_data.ready.eq(h_busy & h_sd & self.read_data.ready),
        ]
        with m.If(self.read_addr.valid & self.read_addr.ready):
            m.d.sync += [h_busy.eq(1), h_sd.eq(r_sd)]
        with m.If(self.read_data.valid & self.read_data.ready):
            m.d.sync += h_busy.eq(0)
        return m
