"""The compiler: a model image and a core configuration -> the device's memory images and
the program for one token (the instruction set is ``isa.py``'s).

The compiler never changes the arithmetic, only where things live and in which order they
run: every instruction is one of ``golden.py``'s unit functions, in the order
``GoldenModel.step`` composes them, so the executor (``execute.py``) equals the golden
model bit for bit, and so must the gateware.

Memory layout (every placement is in :attr:`Compiled.symbols`, name -> (space, addr, len))
==========================================================================================

- WEIGHTS: every BitLinear in image order (each layer's i, f, g, o, gate, down, then
  ``lm_head``: also the order the program runs them), each as
  ``numerics.engine_words(codes, lanes)`` at the next free word: ``ceil(N / lanes) * K``
  words. Symbol names are the image's (``layers.0.attn.i_proj``).

  With ``compile_model(onchip_words=B)`` (a WEIGHTS store split at word B: block RAM
  below, SDRAM from B on, ``mmfree_hw.hybrid_weights.HybridWeightStore``) the BitLinears
  are split in two sets: the on-chip set at ``[0, B)``, in execution order, and the rest
  from word B on, in execution order and back to back, so each SDRAM-resident matrix
  starts where the previous one ended and the SDRAM store's linear read-ahead hits
  (one miss a token, at the first). Words between the on-chip set's end and B are zero
  padding (part of the image, never read). The on-chip set maximizes the words kept on
  chip, a knapsack solved greedily: largest matrix first, each taken if it still fits
  the budget, then the smaller ones fill what is left (for the shipped model every size
  is a multiple of 512 words and the budgets below come out exact). Every matrix is
  read once a token, so words on chip are words the SDRAM does not stream;
  :meth:`Compiled.weight_placement` and :meth:`Compiled.weight_words_per_token` report
  the split. ``B`` = 0 is the default layout, byte for byte; ``B`` >= the model's words
  puts everything on chip. Shipped model, 128 lanes (48,128 words): B = 4,096 keeps
  4,096 on chip (a gate_proj and two 512-word projections), 8,192 keeps 8,192 (lm_head),
  16,384 keeps 16,384 (lm_head, two gate_proj, a down_proj, one 512-word projection).
- PARAMS, per layer: the attention norm's gain ``a`` (``layers.i.attn.i_proj.pre``: one
  ``rms_rsqrt`` serves i, f and g, with i_proj's pre-gain, as in the golden model), the
  folded gains of i, f, g (``...{i,f,g}_proj.gain``), the lower bounds and right after them
  g_norm (the MLGRU instruction addresses both with one field), o_proj's gain,
  gate_proj's pre and gain, down_proj's gain; then lm_head's pre and gain. A BitLinear
  without a pre-gain (o_proj, down_proj) gets an RMS with ``no_gain``.
- EMBED: the table, row-major, at 0.
- SCRATCH: ``x`` (d), ``zi zf zg`` (n each), ``o`` (n), ``gu`` (2I: gate then up, the
  gate_proj output), ``glu`` (I). STATE: layer i's region (the core's fixed ``max_n``
  stride).

The program
===========

::

    EMBED  x <- token
    per layer i (18 instructions, 19 with the TRACE):
      RMS x (attn pre) -> r0 ; QUANT x, G_i ; QUANT x, G_f
      MATVEC i_proj -> zi (r0) ; QUANT x, G_g ; MATVEC f_proj -> zf ; MATVEC g_proj -> zg
      MLGRU zi zf zg -> o, state i
      RMS o (no gain) -> r1 ; QUANT o, G_o ; MATVEC o_proj ADD x (r1)
      RMS x (mlp pre) -> r2 ; QUANT x, G_gate ; MATVEC gate_proj -> gu (r2)
      GLU glu <- gu[:I], gu[I:]
      RMS glu (no gain) -> r3 ; QUANT glu, G_down ; MATVEC down_proj ADD x (r3)
      [TRACE x, tag i]                  (only when compiled with trace=True)
    SKIP_UNLESS_LAST
    RMS x (final pre) -> r0 ; QUANT x, G_lm ; MATVEC lm_head TOPK (r0)
    END

For the shipped model: 114 instructions (120 traced); WEIGHTS 48,128 words at 128 lanes,
PARAMS 18,944, EMBED 1,048,576, SCRATCH 3,584.

Where the hardware can overlap (the ISA's semantics are sequential; these are the places
the order leaves room):

- The engine needs all of ``q_i`` in a bank before it starts; ``QUANT x, G_f``'s pass 1
  overlaps ``QUANT x, G_i``'s pass 2, and its codes fill the second bank while MATVEC i
  runs. ``QUANT x, G_g`` is placed after ``MATVEC i_proj`` so the queue never holds more
  than the two banks: its pass 1 overlaps MATVEC i, its codes fill the bank MATVEC i
  frees while MATVEC f runs, so the engine streams i, f, g back to back.
- Every ``RMS`` sits beside the ``QUANT`` of the same vector: both read it once (one
  SCRATCH pass can feed both units) and R is needed only when the first accumulators
  reach the dequantizer. The four RMSs of a layer rotate through ``r0..r3`` so none waits
  for an older MATVEC still reading its register.
- Dequantize and the residual add (MATVEC ``ADD``) sit on the engine's output stream.
- True dependencies, where a sequencer waits or forwards element by element: MLGRU on
  ``zg`` (channel j needs zg[j] only, which the g_proj MATVEC writes in row groups), the
  norms of ``o`` / ``x`` / ``glu`` on the MATVEC or unit that writes it (both norm units
  need a vector's peak before their second pass, so their pass 1 can ride on the
  producer's output stream), GLU on ``gu``'s up half.

What that leaves serial (an estimate from the units' documented latencies, shipped model):
the engine's ideal is 48,128 cycles a token. Each layer has four points where it waits
for a whole vector to be quantized (x -> i, o -> o_proj, x -> gate, glu -> down; and x ->
lm_head once): about ``2k + 41`` cycles each when the quantizer's pass 1 starts after the
producer has finished (~20 k cycles a token: 1.41 x ideal, 1.55 x with the MLGRU and GLU
passes serial as well) and about ``k + 41`` when pass 1 rides the producer's stream and
MLGRU / GLU ride theirs (~10.5 k: 1.22 x). An engine that starts on the codes as they
arrive (group 0, column k needs only q[k]) would hide most of the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import golden, isa
from .. import numerics as N
from ..core_config import SIM, CoreConfig
from ..isa import Instruction, MatvecMode, Opcode, Space

__all__ = ["SIM", "Compiled", "CoreConfig", "DoesNotFit", "Symbol", "compile_model"]


class DoesNotFit(ValueError):
    """A model that this core cannot hold; the message names every shortfall."""

    def __init__(self, shortfalls: list[str]):
        self.shortfalls = shortfalls
        super().__init__("the model does not fit the core:\n  " + "\n  ".join(shortfalls))


class Symbol(NamedTuple):
    space: Space
    addr: int
    length: int          # in words of the space


@dataclass(frozen=True, eq=False)
class Compiled:
    """A model compiled for a core.

    ``weights`` is uint8 ``[words, lanes / 4]``: one WEIGHTS word a row, its bytes
    little-endian (``numerics.engine_words``; :meth:`weight_word` gives the word as an
    int). ``params`` int32, ``embed`` int16, ``program`` the encoded 128-bit words. Each
    image starts at address 0 of its space and is only as long as the model needs; the
    rest of the space is unused (the executor and the device hold zeros there).
    """

    core: CoreConfig
    config: object               # the model's HGRNBitConfig
    program: tuple[int, ...]
    weights: np.ndarray
    params: np.ndarray
    embed: np.ndarray
    symbols: dict[str, Symbol]
    scratch_words: int           # SCRATCH the program uses
    trace: bool = False
    layout: object = field(default=None, repr=False)
    #: the WEIGHTS split (``compile_model(onchip_words=...)``): words below it are on chip;
    #: None when compiled without one (one store holds every word)
    onchip_words: int | None = None

    def images(self) -> dict[Space, np.ndarray | list[int]]:
        """What the host writes to each space before running (SCRATCH, STATE: nothing)."""
        return {Space.WEIGHTS: self.weights, Space.PARAMS: self.params,
                Space.EMBED: self.embed, Space.PROGRAM: list(self.program)}

    def footprint(self) -> dict[Space, int]:
        """Words used per space (STATE: the regions the layers use, at max_n stride)."""
        c = self.config
        state = (c.num_hidden_layers - 1) * self.core.max_n + c.input_dim
        return {Space.WEIGHTS: len(self.weights), Space.PARAMS: len(self.params),
                Space.EMBED: len(self.embed), Space.SCRATCH: self.scratch_words,
                Space.STATE: state, Space.PROGRAM: len(self.program)}

    def weight_placement(self) -> dict[str, str]:
        """Each BitLinear's memory, ``"onchip"`` or ``"sdram"``, in execution order.
        Only for a model compiled with ``onchip_words`` (ValueError otherwise: the compiler
        then does not know which store the build has)."""
        if self.onchip_words is None:
            raise ValueError("compiled without onchip_words: one store holds every weight "
                             "(footprint() has the words)")
        return {name: "onchip" if sym.addr < self.onchip_words else "sdram"
                for name, sym in self.symbols.items() if sym.space == Space.WEIGHTS}

    def weight_words_per_token(self, generated: bool = True) -> dict[str, int]:
        """The WEIGHTS words one token streams from each memory, ``{"onchip": ...,
        "sdram": ...}``: every BitLinear once (padding never). ``generated=False``: a
        prompt token's, which skips ``lm_head``. Only with ``onchip_words``, as
        :meth:`weight_placement`."""
        out = {"onchip": 0, "sdram": 0}
        for name, where in self.weight_placement().items():
            if generated or name != "lm_head":
                out[where] += self.symbols[name].length
        return out

    def weight_word(self, addr: int) -> int:
        return int.from_bytes(self.weights[addr].tobytes(), "little")

    def program_bytes(self) -> bytes:
        return b"".join(isa.word_bytes(w) for w in self.program)

    def instructions(self) -> list[Instruction]:
        return [isa.decode(w) for w in self.program]

    def disassemble(self) -> str:
        return isa.disassemble(self.program, self.symbols)


def _layout_of(model):
    """A ModelLayout from a layout, a GoldenModel, an image path or (meta, tensors)."""
    if hasattr(model, "layers") and hasattr(model, "config"):
        return model
    if isinstance(model, golden.GoldenModel):
        return model.layout
    if isinstance(model, str):
        model = Path(model)
    return golden.GoldenModel(model).layout


def _bitlinears(layout):
    roles = ("i_proj", "f_proj", "g_proj", "o_proj", "gate_proj", "down_proj")
    prefix = {"i_proj": "attn", "f_proj": "attn", "g_proj": "attn", "o_proj": "attn",
              "gate_proj": "mlp", "down_proj": "mlp"}
    out = [(f"layers.{i}.{prefix[r]}.{r}", getattr(layer, r))
           for i, layer in enumerate(layout.layers) for r in roles]
    return out + [("lm_head", layout.lm_head)]


def _words(w, lanes: int) -> int:
    n, k = w.codes.shape
    return -(-n // lanes) * k


def _choose_onchip(sizes: list[int], budget: int) -> set[int]:
    """The matrices (indices into ``sizes``) kept on chip: greedy, largest first (ties in
    execution order), each taken while it fits what is left of ``budget``."""
    chosen, left = set(), budget
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        if sizes[i] <= left:
            chosen.add(i)
            left -= sizes[i]
    return chosen


def _weight_layout(layout, lanes: int, onchip_words: int | None) -> tuple[dict[str, int], int]:
    """(BitLinear name -> WEIGHTS address, the image's words). Without ``onchip_words``
    all of them back to back from 0; with it the on-chip set from 0 and the rest from
    ``onchip_words`` on, each part in execution order."""
    bls = _bitlinears(layout)
    sizes = [_words(w, lanes) for _, w in bls]
    onchip = set() if onchip_words is None else _choose_onchip(sizes, onchip_words)
    top = {True: 0, False: onchip_words or 0}
    addr = {}
    for i, (name, _) in enumerate(bls):
        addr[name] = top[i in onchip]
        top[i in onchip] += sizes[i]
    return addr, top[False] if len(onchip) < len(bls) else top[True]


# instructions per layer (without TRACE) and around the layers
_PER_LAYER = 18
_FIXED = 1 + 1 + 3 + 1    # EMBED; SKIP_UNLESS_LAST; RMS QUANT MATVEC; END


def _shortfalls(layout, core: CoreConfig, trace: bool, weight_words: int) -> list[str]:
    c = layout.config
    d, n, inter, layers, v = (c.hidden_size, c.input_dim, c.mlp_intermediate_size,
                              c.num_hidden_layers, c.vocab_size)
    out = []
    for what, have, cap, key in (("hidden size d", d, core.max_d, "max_d"),
                                 ("MLGRU width n", n, core.max_n, "max_n"),
                                 ("intermediate size I", inter, core.max_inter, "max_inter"),
                                 ("layers", layers, core.max_layers, "max_layers"),
                                 ("vocabulary", v, core.max_vocab, "max_vocab")):
        if have > cap:
            out.append(f"{what}: the model has {have:,}, the core's {key} is {cap:,} "
                       f"(over by {have - cap:,})")
    need = {
        Space.WEIGHTS: weight_words,
        Space.PARAMS: _param_words(layout),
        Space.EMBED: v * d,
        Space.SCRATCH: d + 4 * n + 3 * inter,
        Space.PROGRAM: _FIXED + layers * (_PER_LAYER + trace),
    }
    for space, words in need.items():
        size = core.size(space)
        if words > size:
            out.append(f"{space.name}: the model needs {words:,} words of "
                       f"{core.word_width(space)} bits, the core has {size:,} "
                       f"(short by {words - size:,})")
    return out


class _Alloc:
    """A bump allocator over one space, recording symbols."""

    def __init__(self, space: Space, symbols: dict[str, Symbol]):
        self.space, self.symbols, self.top = space, symbols, 0

    def take(self, name: str, length: int) -> int:
        addr = self.top
        self.symbols[name] = Symbol(self.space, addr, length)
        self.top += length
        return addr


def compile_model(model, core: CoreConfig = SIM, trace: bool = False,
                  onchip_words: int | None = None) -> Compiled:
    """Compile a model (image path, (meta, tensors), ModelLayout or GoldenModel) for a core.

    Raises :class:`DoesNotFit` naming every memory that is short and every dimension over
    the core's maxima. ``trace=True`` adds a TRACE of x (tag i) after each layer.
    ``onchip_words``: a WEIGHTS store split at that word (block RAM below, SDRAM above):
    the BitLinears that fit below are placed there, the rest from it on, each part in
    execution order (the module's memory layout says how they are chosen); WEIGHTS then
    needs ``onchip_words`` + the SDRAM part's words (or just the on-chip words when every
    matrix fits). None (the default): no split, the plain layout.
    """
    if onchip_words is not None and onchip_words < 0:
        raise ValueError(f"onchip_words must be >= 0, not {onchip_words}")
    layout = _layout_of(model)
    waddr, weight_words = _weight_layout(layout, core.lanes, onchip_words)
    short = _shortfalls(layout, core, trace, weight_words)
    if short:
        raise DoesNotFit(short)
    c = layout.config
    d, n, inter = c.hidden_size, c.input_dim, c.mlp_intermediate_size
    symbols: dict[str, Symbol] = {}

    # -- WEIGHTS (symbols in execution order, whatever the addresses)
    weights = np.zeros((weight_words, core.lanes // N.CODES_PER_BYTE), dtype=np.uint8)
    for name, w in _bitlinears(layout):
        words = N.engine_words(w.codes, core.lanes)
        symbols[name] = Symbol(Space.WEIGHTS, waddr[name], len(words))
        weights[waddr[name]:waddr[name] + len(words)] = words

    # -- PARAMS
    pa = _Alloc(Space.PARAMS, symbols)
    pvals: list[np.ndarray] = []

    def param(name: str, values) -> int:
        values = np.asarray(values, dtype=np.int64)
        pvals.append(values)
        return pa.take(name, len(values))

    # -- EMBED
    embed = np.ascontiguousarray(layout.embedding, dtype=np.int16).reshape(-1)
    symbols["embedding"] = Symbol(Space.EMBED, 0, len(embed))

    # -- SCRATCH
    sa = _Alloc(Space.SCRATCH, symbols)
    x = sa.take("x", d)
    zi, zf, zg = sa.take("zi", n), sa.take("zf", n), sa.take("zg", n)
    o = sa.take("o", n)
    gu = sa.take("gu", 2 * inter)
    hg = sa.take("glu", inter)
    for i in range(c.num_hidden_layers):
        symbols[f"state.{i}"] = Symbol(Space.STATE, i * core.max_n, n)

    prog: list[Instruction] = []
    emit = prog.append

    def rms(src: int, length: int, pre, pre_frac: int, reg: int, name: str):
        gain = 0 if pre is None else param(name, pre)
        emit(Instruction(Opcode.RMS, src=src, len=length, gain=gain,
                         no_gain=int(pre is None), frac=0 if pre is None else pre_frac,
                         reg=reg, sqrt_k=golden.sqrt_pf(length)))

    def quant(src: int, length: int, w, name: str):
        emit(Instruction(Opcode.QUANT, src=src, len=length,
                         gain=param(f"{name}.gain", w.gain), frac=w.gain_frac,
                         rows=w.codes.shape[0]))

    def matvec(name: str, w, dst: int, reg: int, mode: MatvecMode):
        rows, k = w.codes.shape
        emit(Instruction(Opcode.MATVEC, waddr=waddr[name], k=k, rows=rows,
                         dst=0 if mode == MatvecMode.TOPK else dst, reg=reg,
                         w_scale=w.w_scale, mode=mode))

    emit(Instruction(Opcode.EMBED, dst=x, len=d, frac=layout.embedding_frac, base=0,
                     rows=c.vocab_size))
    for i, layer in enumerate(layout.layers):
        a, m = f"layers.{i}.attn", f"layers.{i}.mlp"
        ip, fp, gp = layer.i_proj, layer.f_proj, layer.g_proj
        rms(x, d, ip.pre, ip.pre_frac, 0, f"{a}.i_proj.pre")
        quant(x, d, ip, f"{a}.i_proj")
        matvec(f"{a}.i_proj", ip, zi, 0, MatvecMode.STORE)
        quant(x, d, fp, f"{a}.f_proj")
        matvec(f"{a}.f_proj", fp, zf, 0, MatvecMode.STORE)
        quant(x, d, gp, f"{a}.g_proj")
        matvec(f"{a}.g_proj", gp, zg, 0, MatvecMode.STORE)
        lb = param(f"layers.{i}.lower_bound", layer.lower_bound)
        param(f"layers.{i}.g_norm", layer.g_norm)          # at lb + n: the MLGRU's rule
        emit(Instruction(Opcode.MLGRU, zi=zi, zf=zf, zg=zg, dst=o, n=n, layer=i, lb=lb,
                         gn_frac=layer.g_norm_frac))
        op_ = layer.o_proj
        rms(o, n, op_.pre, op_.pre_frac, 1, f"{a}.o_proj.pre")
        quant(o, n, op_, f"{a}.o_proj")
        matvec(f"{a}.o_proj", op_, x, 1, MatvecMode.ADD)
        g = layer.gate_proj
        rms(x, d, g.pre, g.pre_frac, 2, f"{m}.gate_proj.pre")
        quant(x, d, g, f"{m}.gate_proj")
        matvec(f"{m}.gate_proj", g, gu, 2, MatvecMode.STORE)
        emit(Instruction(Opcode.GLU, dst=hg, gate=gu, up=gu + inter, len=inter))
        dp = layer.down_proj
        rms(hg, inter, dp.pre, dp.pre_frac, 3, f"{m}.down_proj.pre")
        quant(hg, inter, dp, f"{m}.down_proj")
        matvec(f"{m}.down_proj", dp, x, 3, MatvecMode.ADD)
        if trace:
            emit(Instruction(Opcode.TRACE, src=x, len=d, tag=i))
    emit(Instruction(Opcode.SKIP_UNLESS_LAST))
    lm = layout.lm_head
    rms(x, d, lm.pre, lm.pre_frac, 0, "lm_head.pre")
    quant(x, d, lm, "lm_head")
    matvec("lm_head", lm, 0, 0, MatvecMode.TOPK)
    emit(Instruction(Opcode.END))

    params = np.concatenate(pvals)
    # the shortfall check counted these; a disagreement is a compiler bug, not a refusal
    assert len(prog) == _FIXED + c.num_hidden_layers * (_PER_LAYER + trace)
    assert len(params) == _param_words(layout) and sa.top == d + 4 * n + 3 * inter
    assert np.all(np.abs(params) < 1 << 31)
    for name, sym in symbols.items():
        assert sym.addr + sym.length <= core.size(sym.space), name
    return Compiled(core, c, tuple(isa.encode(p) for p in prog), weights,
                    params.astype(np.int32), embed, symbols, sa.top, trace, layout,
                    onchip_words)


def _param_words(layout) -> int:
    """PARAMS words the compiler places: every gain the program reads, lb and g_norm."""
    def size(v):
        return 0 if v is None else len(v)

    total = 0
    for layer in layout.layers:
        total += size(layer.i_proj.pre) + len(layer.lower_bound) + len(layer.g_norm)
        total += sum(len(getattr(layer, r).gain) for r in ("i_proj", "f_proj", "g_proj"))
        total += sum(size(getattr(layer, r).pre) + len(getattr(layer, r).gain)
                     for r in ("o_proj", "gate_proj", "down_proj"))
    return total + size(layout.lm_head.pre) + len(layout.lm_head.gain)
