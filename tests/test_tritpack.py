"""The 1.6-bit packed weight format (NUMERICS.md, "Packed weights (1.6 bits per code)"): the
numerics' packer and unpacker against an independent base-3 oracle (round trips, every byte
value, the invalid bytes and codes, the size helpers), then TritUnpack in Amaranth's
simulator: random words under input gaps and output back-pressure, every byte value at
every byte position, ``beats.ready`` low exactly when the finished word cannot leave, and
the latency and throughput its docstring promises."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from mmfree_fpga import numerics as N
from mmfree_hw.tritpack import TritUnpack

VALUE_CODE = {-1: N.CODE_NEG, 0: N.CODE_ZERO, 1: N.CODE_POS}


def oracle_codes(byte: int) -> list[int]:
    """The five codes of a byte, from the definition (digit i = value + 1, least significant
    first); bytes >= 243 give five zero codes."""
    if byte >= 243:
        return [N.CODE_ZERO] * 5
    return [VALUE_CODE[(byte // 3 ** i) % 3 - 1] for i in range(5)]


def random_codes(rng, shape):
    return rng.choice(np.array([N.CODE_ZERO, N.CODE_POS, N.CODE_NEG], dtype=np.uint8), shape)


# -- numerics ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 4, 5, 6, 9, 10, 11, 16, 40, 127, 128, 129, 256])
def test_round_trip(n):
    rng = np.random.default_rng(n)
    codes = random_codes(rng, (3, n))
    packed = N.pack_base3(codes)
    assert packed.shape == (3, -(-n // 5)) and packed.dtype == np.uint8
    assert np.all(packed < 243)
    assert np.array_equal(N.unpack_base3(packed, n), codes)
    values = rng.integers(-1, 2, (2, 5, n))
    pv = N.pack_base3(values, values=True)
    assert np.array_equal(pv, N.pack_base3(N.encode_codes(values)))
    assert np.array_equal(N.unpack_base3(pv, n, values=True), values)
    # the pad codes are zero: a byte's unused digits are 1
    if n % 5:
        tail = N.unpack_base3(packed)[..., n:]
        assert np.all(tail == N.CODE_ZERO)


def test_every_byte_value():
    for b in range(256):
        assert N.unpack_base3(np.array([b]), strict=False).tolist() == oracle_codes(b)
        assert N.BASE3_DECODE_TABLE[b] == sum(c << (2 * i) for i, c in enumerate(oracle_codes(b)))
        if b < 243:
            assert N.unpack_base3(np.array([b])).tolist() == oracle_codes(b)
            assert N.pack_base3(np.array(oracle_codes(b))).tolist() == [b]
        else:
            with pytest.raises(ValueError):
                N.unpack_base3(np.array([b]))
    assert N.BASE3_ZERO_BYTE == 121 and oracle_codes(121) == [N.CODE_ZERO] * 5


def test_packer_is_a_bijection_onto_0_to_242():
    groups = np.array(np.meshgrid(*[[-1, 0, 1]] * 5, indexing="ij")).reshape(5, -1).T
    packed = N.pack_base3(groups, values=True)[:, 0]
    assert sorted(packed.tolist()) == list(range(243))


def test_invalid_inputs_raise():
    with pytest.raises(ValueError):
        N.pack_base3(np.array([0, 1, N.CODE_INVALID, 3]))
    with pytest.raises(ValueError):
        N.pack_base3(np.array([0, 4]))
    with pytest.raises(ValueError):
        N.pack_base3(np.array([0, 2]), values=True)
    with pytest.raises(ValueError):
        N.pack_base3(np.array([-2]), values=True)
    with pytest.raises(ValueError):
        N.unpack_base3(np.array([1, 2]), 11)            # 11 codes need 3 bytes
    with pytest.raises(ValueError):
        N.pack_words_base3(np.zeros((2, 7), np.uint8), 16)


def test_size_helpers():
    for lanes in range(8, 257):
        nbytes = N.packed_word_bytes(lanes)
        assert nbytes == -(-lanes // 5) and 5 * nbytes >= lanes > 5 * (nbytes - 1)
        beats = N.packed_word_beats(lanes)
        assert beats == -(-nbytes // 2) and beats <= -(-2 * lanes // 16)
        assert N.packed_word_beats(lanes, 32) == -(-nbytes // 4)
        assert N.packed_word_beats(lanes, 8) == nbytes
    assert (N.packed_word_bytes(128), N.packed_word_beats(128)) == (26, 13)


@pytest.mark.parametrize("lanes", [8, 12, 16, 40, 128])
def test_word_stream_round_trip(lanes):
    rng = np.random.default_rng(lanes)
    t = rng.integers(-1, 2, (2 * lanes + 3, 9))
    words2 = N.engine_words(t, lanes)                    # the 2-bit layout's bytes
    codes = N.unpack_code_bytes(words2)
    stream = N.pack_words_base3(words2, lanes)
    assert np.array_equal(stream, N.pack_words_base3(codes, lanes))
    slot = 2 * N.packed_word_beats(lanes)
    assert stream.shape == (len(words2) * slot,) and np.all(stream < 243)
    per_word = stream.reshape(-1, slot)
    assert np.all(per_word[:, N.packed_word_bytes(lanes):] == N.BASE3_ZERO_BYTE)
    assert np.array_equal(N.unpack_words_base3(stream, lanes), codes)
    assert np.array_equal(N.pack_code_bytes(N.unpack_words_base3(stream, lanes)), words2)
    beats = N.packed_beat_ints(stream)
    assert beats[0] == int(stream[0]) | int(stream[1]) << 8
    bad = stream.copy()
    bad[-1] = 250
    with pytest.raises(ValueError):
        N.unpack_words_base3(bad, lanes)
    assert np.array_equal(N.unpack_words_base3(bad, lanes, strict=False), codes)  # a pad


# -- gateware ---------------------------------------------------------------------------------

def word_int(codes) -> int:
    return sum(int(c) << (2 * i) for i, c in enumerate(codes))


def oracle_words(stream: np.ndarray, lanes: int) -> list[int]:
    slot = 2 * N.packed_word_beats(lanes)
    out = []
    for w in stream.reshape(-1, slot):
        codes = [c for b in w[:N.packed_word_bytes(lanes)] for c in oracle_codes(int(b))]
        out.append(word_int(codes[:lanes]))
    return out


def run_unpack(dut, beats, valid_prob=1.0, ready_prob=1.0, seed=0, settle=20):
    """Drive ``beats`` into ``dut`` (gaps with ``valid_prob``, junk payload in the gaps) and
    take words with ``words.ready`` high with ``ready_prob``; checks every cycle that
    ``beats.ready`` is low exactly at a word's last beat while a word waits and is not taken.
    Returns (words, edges that accepted each beat, edges that took each word)."""
    rng = random.Random(seed)
    n_words = len(beats) // dut.BEATS
    words, beat_edges, word_edges = [], [], []

    async def bench(ctx):
        edge = i = pos = 0
        while len(words) < n_words:
            valid = i < len(beats) and rng.random() < valid_prob
            ctx.set(dut.beats.valid, valid)
            ctx.set(dut.beats.payload, beats[i] if valid else rng.getrandbits(dut.beat_bits))
            ready = rng.random() < ready_prob
            ctx.set(dut.words.ready, ready)
            *_, b_ready, w_valid, w_payload = await ctx.tick().sample(
                dut.beats.ready, dut.words.valid, dut.words.payload)
            edge += 1
            assert b_ready == (not (pos == dut.BEATS - 1 and w_valid and not ready)), edge
            if valid and b_ready:
                beat_edges.append(edge)
                i += 1
                pos = (pos + 1) % dut.BEATS
            if w_valid and ready:
                words.append(int(w_payload))
                word_edges.append(edge)
            assert edge < 200_000, "no progress"
        ctx.set(dut.beats.valid, 0)
        ctx.set(dut.words.ready, 1)
        for _ in range(settle):
            *_, w_valid = await ctx.tick().sample(dut.words.valid)
            assert not w_valid, "an extra word"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return words, beat_edges, word_edges


@pytest.mark.parametrize("lanes,n_words", [(128, 60), (40, 80), (16, 80), (12, 60), (8, 60)])
@pytest.mark.parametrize("valid_prob,ready_prob", [(1.0, 1.0), (0.6, 1.0), (1.0, 0.4),
                                                   (0.7, 0.3)])
def test_random_words(lanes, n_words, valid_prob, ready_prob):
    rng = np.random.default_rng(lanes)
    codes = random_codes(rng, (n_words, lanes))
    stream = N.pack_words_base3(codes, lanes)
    dut = TritUnpack(lanes)
    words, _, _ = run_unpack(dut, N.packed_beat_ints(stream), valid_prob, ready_prob,
                             seed=lanes + 7)
    assert words == [word_int(c) for c in codes]


@pytest.mark.parametrize("lanes", [128, 40, 12])
def test_every_byte_at_every_position(lanes):
    """Word w's byte p is (w + 37 p) mod 256, pad bytes included: each of the 256 values at
    each position once; 243..255 decode to five zero codes, as unpack_words_base3 with
    strict=False says."""
    slot = 2 * N.packed_word_beats(lanes)
    stream = np.array([(w + 37 * p) % 256 for w in range(256) for p in range(slot)],
                      dtype=np.uint8)
    expect = oracle_words(stream, lanes)
    numerics = N.unpack_words_base3(stream, lanes, strict=False)
    assert expect == [word_int(c) for c in numerics]
    words, _, _ = run_unpack(TritUnpack(lanes), N.packed_beat_ints(stream), 0.8, 0.7, seed=3)
    assert words == expect


@pytest.mark.parametrize("lanes", [128, 40, 16, 8])
def test_throughput_and_latency(lanes):
    """No gaps, no back-pressure: a beat every cycle, so word n is valid n * BEATS cycles
    after the first, each LATENCY (1) cycle after the edge that took its last beat."""
    rng = np.random.default_rng(1)
    n_words = 20
    stream = N.pack_words_base3(random_codes(rng, (n_words, lanes)), lanes)
    dut = TritUnpack(lanes)
    beats = N.packed_beat_ints(stream)
    words, beat_edges, word_edges = run_unpack(dut, beats)
    assert dut.BEATS == N.packed_word_beats(lanes) and TritUnpack.LATENCY == 1
    assert beat_edges == list(range(1, len(beats) + 1)), "the input stalled"
    last_beats = beat_edges[dut.BEATS - 1::dut.BEATS]
    assert [w - b for w, b in zip(word_edges, last_beats, strict=True)] == [1] * n_words
    assert word_edges == [word_edges[0] + n * dut.BEATS for n in range(n_words)]
    assert word_edges[0] == dut.BEATS + TritUnpack.LATENCY


def test_back_pressure_stops_only_the_last_beat():
    """With words.ready low throughout, the first word waits in the output register and the
    next word's beats still go in, all but its last."""
    lanes = 40
    dut = TritUnpack(lanes)
    stream = N.pack_words_base3(random_codes(np.random.default_rng(2), (3, lanes)), lanes)
    beats = N.packed_beat_ints(stream)
    taken = []

    async def bench(ctx):
        ctx.set(dut.words.ready, 0)
        i = 0
        for _ in range(40):
            ctx.set(dut.beats.valid, 1)
            ctx.set(dut.beats.payload, beats[i])
            *_, ready = await ctx.tick().sample(dut.beats.ready)
            i += ready
        taken.append(i)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert taken == [2 * dut.BEATS - 1]
