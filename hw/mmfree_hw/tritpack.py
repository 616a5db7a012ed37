"""The 1.6-bit weight decoder: :class:`TritUnpack` turns the packed byte stream of
``numerics.pack_words_base3`` (5 ternary codes a byte, base 3; NUMERICS.md, "Packed weights
(1.6 bits per code)"), as a 16-bit SDRAM delivers it, back into the engine's weight words
of 2-bit codes. It sits between the SDRAM's read port and the weight streamer's FIFO; the
2-bit path needs no decoder (a word is its beats concatenated).
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from mmfree_fpga import numerics as N

DECODE_BITS = N.CODE_BITS * N.TRITS_PER_BYTE      # one byte's five codes: 10 bits


def decode_byte(m: Module, byte, table: str = "switch", name: str = "decode"):
    """The 10-bit field of five 2-bit codes of ``byte`` (``numerics.BASE3_DECODE_TABLE``,
    code i at bits [2i, 2i+2); bytes 243..255 give five CODE_ZERO codes), combinational.

    ``table`` picks how the 256 entries are written: ``"switch"`` (an ``m.Switch`` over the
    byte, one ``Case`` per entry), ``"array"`` (an ``Array`` of ``Const`` indexed by the
    byte) or ``"rom"`` (``memory.Memory`` with a combinational read port, submodule
    ``name``). All three come from the same table; scripts/sdram_cost.py measures them
    (``"switch"`` and ``"array"`` map identically and smallest).
    """
    out = Signal(DECODE_BITS)
    if table == "switch":
        with m.Switch(byte):
            for b, field in enumerate(N.BASE3_DECODE_TABLE):
                with m.Case(b):
                    m.d.comb += out.eq(Const(field, DECODE_BITS))
    elif table == "array":
        m.d.comb += out.eq(Array(Const(f, DECODE_BITS) for f in N.BASE3_DECODE_TABLE)[byte])
    elif table == "rom":
        rom = memory.Memory(shape=DECODE_BITS, depth=256, init=N.BASE3_DECODE_TABLE)
        m.submodules[name] = rom
        rd = rom.read_port(domain="comb")
        m.d.comb += [rd.addr.eq(byte), out.eq(rd.data)]
    else:
        raise ValueError(f"unknown table style {table!r}")
    return out


class TritUnpack(wiring.Component):
    """Packed weight beats in, engine weight words out: ``numerics.unpack_words_base3`` in
    gateware, bit-exact (``strict=False``: a byte 243..255 decodes to five CODE_ZERO codes).

    Ports (Amaranth streams; a beat transfers at an edge where valid and ready are high):

    - ``beats``: In stream of ``beat_bits``-bit beats (``beat_bits`` a multiple of 8, the
      SDRAM's data width), its bytes little-endian (byte 0 at bits [0, 8)). Word after word,
      each ``BEATS`` = ``numerics.packed_word_beats(lanes, beat_bits)`` beats: the word's
      ``numerics.packed_word_bytes(lanes)`` bytes, byte j holding codes 5j .. 5j+4 (the
      least significant base-3 digit first), then pad bytes up to the beat boundary. Codes
      past ``lanes`` (the last byte's pad digits) and pad bytes are dropped unread, so their
      values do not matter (the packer writes CODE_ZERO digits and ``BASE3_ZERO_BYTE``).
      The decoder keeps its position in the word across gaps; it has no other framing, so
      the stream must start on a word (after reset).
    - ``words``: Out stream of ``2 * lanes``-bit words, the engine's format (lane l at bits
      [2l, 2l+2): ``numerics.engine_words``), one per ``BEATS`` beats, in order.

    Datapath: each accepted beat's bytes are decoded as it arrives, ``beat_bits / 8`` table
    lookups per cycle (two for 16-bit beats: 10 codes), combinationally from ``beats.payload``
    into a shift register of ``BEATS - 1`` beats' codes (the first beats of the word being
    assembled). At the word's last beat, the register and that beat's codes go into the
    one-word output register (``words.payload``) at the same edge, and assembly of the next
    word starts in the next cycle. ``beats.ready`` is low only at a word's last beat while
    the output register holds a word that is not taken in that cycle (it depends on
    ``words.ready`` combinationally there; no valid depends on a ready).

    ``table``: how the decode tables are written (:func:`decode_byte`); the default,
    ``"switch"``, is the smallest.

    Latency: ``LATENCY`` = 1: a word is valid on ``words`` 1 cycle after the cycle whose edge
    accepted its last beat, and held until taken.
    Throughput: one beat per cycle (the SDRAM's rate), so one word every ``BEATS`` cycles
    (13 for 128 lanes, against 16 beats of 2-bit codes): with ``beats`` valid and
    ``words.ready`` high every cycle, word n is valid exactly ``n * BEATS`` cycles after the
    first. With ``words.ready`` low the beats of the next word still go in; only its last
    beat waits.

    Resources: ``beat_bits / 8`` copies of the 256 x 10-bit decode table in LUTs, a
    ``10 * beat_bits / 8 * (BEATS - 1)``-bit shift register, the ``2 * lanes``-bit output
    register, a beat counter. ECP5 (YoWASP Yosys 0.70 synth_ecp5, scripts/sdram_cost.py),
    128 lanes, 16-bit beats: 269 LUT4 (+ 109 PFUMX, 55 L6MUX21), 501 FF, no carry chain,
    against 21 LUT4 and the same 501 FF for the 2-bit path's plain 16-beat assembly: the two
    tables cost ~124 LUT4 each (a bare table: 123 LUT4, 51 PFUMX, 27 L6MUX21). The
    ``"switch"`` and ``"array"`` tables map identically; ``"rom"`` (a combinational-read
    ``Memory``) to 281 LUT4. A table with a register on both sides would map to one DP16KD
    and no LUTs, at a cycle of latency and a skid buffer for back-pressure: not done.
    """

    LATENCY = 1

    def __init__(self, lanes: int, beat_bits: int = 16, table: str = "switch"):
        if beat_bits < 8 or beat_bits % 8:
            raise ValueError("a beat is whole bytes")
        self.lanes, self.beat_bits, self.table = lanes, beat_bits, table
        self.word_bits = N.CODE_BITS * lanes
        self.BEATS = N.packed_word_beats(lanes, beat_bits)
        super().__init__({
            "beats": In(stream.Signature(beat_bits)),
            "words": Out(stream.Signature(self.word_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        nbytes = self.beat_bits // 8
        beats = self.BEATS
        # this beat's 5 * nbytes codes, byte i's at [10i, 10i + 10)
        dec = Cat(*[decode_byte(m, self.beats.payload[8 * i:8 * i + 8], self.table,
                                f"decode{i}") for i in range(nbytes)])
        chunk = len(dec)
        sr = Signal(chunk * (beats - 1))                      # the word's earlier beats
        word = Cat(sr, dec)[:self.word_bits]                  # as it stands at its last beat
        pos = Signal(range(beats))                            # beats of this word taken
        last = pos == beats - 1

        out_valid = self.words.valid
        m.d.comb += self.beats.ready.eq(~last | ~out_valid | self.words.ready)
        take = self.beats.valid & self.beats.ready

        with m.If(self.words.ready):
            m.d.sync += out_valid.eq(0)
        with m.If(take):
            if beats > 1:
                m.d.sync += sr.eq(Cat(sr[chunk:], dec))       # beat k lands at chunk k
            with m.If(last):
                m.d.sync += [pos.eq(0), self.words.payload.eq(word), out_valid.eq(1)]
            with m.Else():
                m.d.sync += pos.eq(pos + 1)
        return m


def encode_codes(codes) -> Value:
    """One packed byte from five 2-bit codes (``codes``: 10 bits, code i at [2i, 2i+2)),
    combinational: ``numerics.pack_base3`` of one group (digit i = value + 1 weighted 3^i).
    The invalid code 0b10 is packed as CODE_ZERO (the host never sends it; the store does
    not refuse it). Small: five 2-bit digits times constants, four adders of 8 bits."""
    total = 0
    for i in range(N.TRITS_PER_BYTE):
        c = codes[N.CODE_BITS * i:N.CODE_BITS * (i + 1)]
        digit = Mux(c == N.CODE_POS, 2, Mux(c == N.CODE_NEG, 0, 1))
        total = total + digit * (3 ** i)
    return total[:8]


def encode_beat(codes, beat_bits: int = 16) -> Value:
    """A packed beat (``beat_bits / 8`` bytes, byte 0 low) from the next
    ``5 * beat_bits / 8`` codes of ``codes`` (codes beyond its width count as CODE_ZERO)."""
    per = N.CODE_BITS * N.TRITS_PER_BYTE
    width = per * (beat_bits // 8)
    padded = Cat(codes, Const(0, max(0, width - len(codes))))
    return Cat(*[encode_codes(padded[per * i:per * (i + 1)]) for i in range(beat_bits // 8)])
