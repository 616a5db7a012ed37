"""The instruction set: field tables, encode/decode round trips, refusals, the disassembler,
and the core configuration's checks against the ISA's field widths."""

import dataclasses

import numpy as np
import pytest

from mmfree_fpga import isa
from mmfree_fpga import numerics as N
from mmfree_fpga.core_config import SIM, CoreConfig
from mmfree_fpga.isa import (
    FIELDS,
    DecodeError,
    Instruction,
    MatvecMode,
    Opcode,
    decode,
    disassemble,
    encode,
)
from mmfree_fpga.numerics import PF


def test_field_tables_are_disjoint_and_fit_the_word():
    for op, fields in FIELDS.items():
        used = 0
        for f in [isa.OPCODE_FIELD, *fields.values()]:
            mask = ((1 << f.width) - 1) << f.offset
            assert not used & mask, (op, f)
            used |= mask
            assert f.offset + f.width <= isa.WORD_BITS
        # packed from bit 8 without gaps: the rest of the word is the reserved part
        assert used == (1 << isa.used_bits(op)) - 1
    assert {*isa.ADDRESS_SPACE} <= {n for f in FIELDS.values() for n in f}
    assert FIELDS[Opcode.RMS]["frac"].width == N.GAIN_FRAC_BITS
    assert FIELDS[Opcode.MLGRU]["gn_frac"].width == N.GN_FRAC_BITS
    assert FIELDS[Opcode.MATVEC]["w_scale_exp"] == (110, N.PF_EXP_BITS, True)
    assert FIELDS[Opcode.MATVEC]["k"].hi >= N.MAX_K


def test_docstring_field_table_is_the_code_s():
    block = "\n".join("    " + line for line in isa.field_table().splitlines())
    assert block in isa.__doc__


def _random_values(op, rng):
    vals = {}
    for name, f in FIELDS[op].items():
        vals[name] = int(rng.integers(f.lo, f.hi, endpoint=True))
    if op == Opcode.MATVEC:
        vals["mode"] = int(rng.choice([m.value for m in MatvecMode]))
    return vals


@pytest.mark.parametrize("op", list(Opcode))
def test_round_trip_random_and_extreme(op):
    rng = np.random.default_rng(int(op))
    cases = [_random_values(op, rng) for _ in range(300)]
    lo = {n: f.lo for n, f in FIELDS[op].items()}
    hi = {n: f.hi for n, f in FIELDS[op].items()}
    if op == Opcode.MATVEC:
        hi["mode"] = max(MatvecMode)
    cases += [lo, hi, {}]
    for vals in cases:
        ins = Instruction(op, **vals)
        word = encode(ins)
        assert 0 <= word < 1 << isa.WORD_BITS
        assert word & 0xFF == op
        assert word >> isa.used_bits(op) == 0
        back = decode(word)
        assert back == ins and back.fields == ins.fields and hash(back) == hash(ins)
        assert decode(int.from_bytes(isa.word_bytes(word), "little")) == ins


def test_encoding_is_as_the_table_says():
    assert encode(Instruction(Opcode.END)) == 0x0A
    ins = Instruction(Opcode.MATVEC, waddr=0x12345678, k=256, rows=4096, dst=7, reg=3,
                      w_scale=PF(0x9251, -26), mode=MatvecMode.TOPK)
    w = encode(ins)
    f = FIELDS[Opcode.MATVEC]
    get = lambda name: (w >> f[name].offset) & ((1 << f[name].width) - 1)  # noqa: E731
    assert get("waddr") == 0x12345678 and get("rows") == 4096 and get("reg") == 3
    assert get("w_scale_exp") == 256 - 26            # two's complement in 8 bits
    assert ins.w_scale == PF(0x9251, -26) and decode(w).w_scale == PF(0x9251, -26)
    assert isa.word_bytes(w)[0] == Opcode.MATVEC     # little-endian: opcode first
    assert len(isa.word_bytes(w)) == 16


def test_instruction_refuses_bad_values():
    with pytest.raises(ValueError, match="does not fit its 16-bit unsigned field"):
        Instruction(Opcode.GLU, len=1 << 16)
    with pytest.raises(ValueError, match="-129 does not fit its 8-bit signed"):
        Instruction(Opcode.MATVEC, w_scale=PF(1 << 15, -129))
    with pytest.raises(ValueError, match="does not fit"):
        Instruction(Opcode.QUANT, src=-1)
    with pytest.raises(ValueError, match="has no field tag"):
        Instruction(Opcode.ADD, tag=1)
    with pytest.raises(ValueError, match="not an integer"):
        Instruction(Opcode.ADD, len=1.5)
    with pytest.raises(ValueError):
        Instruction(0x0B)
    ins = Instruction(Opcode.ADD, len=3)
    with pytest.raises(AttributeError):
        ins.len = 4
    with pytest.raises(AttributeError, match="no field 'gate'"):
        _ = ins.gate


@pytest.mark.parametrize("code", [0x00, 0x0B, 0x7F, 0xFF])
def test_unknown_opcodes_are_refused(code):
    with pytest.raises(DecodeError, match=f"unknown opcode 0x{code:02x}"):
        decode(code | 5 << 8)


@pytest.mark.parametrize("op", list(Opcode))
def test_reserved_bits_are_refused(op):
    rng = np.random.default_rng(100 + op)
    base = encode(Instruction(op, **_random_values(op, rng)))
    for bit in {isa.used_bits(op), isa.WORD_BITS - 1, *rng.integers(isa.used_bits(op), 128, 5)}:
        with pytest.raises(DecodeError, match="reserved bits"):
            decode(base | 1 << int(bit))


def test_reserved_mode_and_out_of_range_words():
    w = encode(Instruction(Opcode.MATVEC, k=1, rows=1))
    with pytest.raises(DecodeError, match="reserved mode 3"):
        decode(w | 3 << FIELDS[Opcode.MATVEC]["mode"].offset)
    with pytest.raises(DecodeError, match="outside 128 bits"):
        decode(1 << 128 | 0x0A)
    with pytest.raises(DecodeError):
        decode(-1)


def test_disassembler():
    prog = [
        Instruction(Opcode.EMBED, dst=0, len=256, frac=16, base=0, rows=4096),
        Instruction(Opcode.RMS, src=0, len=256, gain=0, frac=14, reg=0,
                    sqrt_k=PF(32768, -11)),
        Instruction(Opcode.QUANT, src=0, len=256, gain=256, frac=15, rows=256),
        Instruction(Opcode.MATVEC, waddr=0, k=256, rows=256, dst=256, reg=0,
                    w_scale=PF(37457, -26), mode=MatvecMode.STORE),
        Instruction(Opcode.MLGRU, zi=256, zf=512, zg=768, dst=1024, n=256, layer=5, lb=1024,
                    gn_frac=14),
        Instruction(Opcode.TRACE, src=0, len=256, tag=5),
        Instruction(Opcode.SKIP_UNLESS_LAST),
        Instruction(Opcode.END),
    ]
    words = [encode(i) for i in prog] + [0, 0xFF, encode(prog[-1]) | 1 << 100]
    syms = {"x": (isa.Space.SCRATCH, 0, 256), "zi": (isa.Space.SCRATCH, 256, 256),
            "emb": (isa.Space.EMBED, 0, 10), "w0": (isa.Space.WEIGHTS, 0, 512)}
    text = disassemble(words, syms)
    assert text.splitlines() == [
        "0000  EMBED            dst=s[0] len=256 frac=16 base=e[0] rows=4096  ; x, emb",
        "0001  RMS              src=s[0] len=256 gain=p[0] no_gain=0 frac=14 reg=r0 "
        "sqrt_k=32768*2^-11  ; x",
        "0002  QUANT            src=s[0] len=256 gain=p[256] frac=15 rows=256  ; x",
        "0003  MATVEC           waddr=w[0] k=256 rows=256 dst=s[256] reg=r0 "
        "w_scale=37457*2^-26 mode=STORE  ; w0, zi",
        "0004  MLGRU            zi=s[256] zf=s[512] zg=s[768] dst=s[1024] n=256 layer=5 "
        "lb=p[1024] gn_frac=14  ; zi",
        "0005  TRACE            src=s[0] len=256 tag=5  ; x",
        "0006  SKIP_UNLESS_LAST",
        "0007  END",
        "0008  .word 0x00000000000000000000000000000000  ; unknown opcode 0x00",
        "0009  .word 0x000000000000000000000000000000ff  ; unknown opcode 0xff",
        "000a  .word 0x0000001000000000000000000000000a  ; END: reserved bits above bit 8 set",
    ]
    assert str(prog[3]) in repr(text)
    assert repr(prog[-1]) == "Instruction(Opcode.END)"


def test_core_config_checks():
    assert SIM.word_bits == 256 and SIM.state_words == SIM.max_layers * SIM.max_n
    assert SIM.size(isa.Space.EMBED) >= 4096 * 256           # the shipped model's table
    assert SIM.weight_words * 128 >= 6_160_384                # and every ternary weight
    with pytest.raises(ValueError, match="multiple of 4"):
        CoreConfig(lanes=30)
    with pytest.raises(ValueError, match="16-bit addresses"):
        dataclasses.replace(SIM, scratch_words=(1 << 16) + 1)
    with pytest.raises(ValueError, match="proven for"):
        dataclasses.replace(SIM, max_inter=N.MAX_K + 1)
    with pytest.raises(ValueError, match="layer field"):
        dataclasses.replace(SIM, max_layers=257)
    with pytest.raises(ValueError, match="positive"):
        dataclasses.replace(SIM, program_words=0)
