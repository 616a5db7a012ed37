"""The CRC command on the Verilated accelerator (``top.Accelerator``, the SIM configuration):
after the shipped model's upload, the core's CRC of every image (WEIGHTS through the weight
store's host read path, the other spaces through the core's ports) equals the host's
``commands.words_crc``, and equals zlib.crc32 of what READ returns; the driver's
``write(..., verify=True)`` / ``verify`` and their refusal of a range that does not hold the
words; CRC's BAD_RANGE and BAD_SPACE; IDENTIFY's build id."""

import sys
import time
import zlib

import numpy as np
import pytest
from sim_device import SHIPPED, require_verilator

from mmfree_fpga import commands as C
from mmfree_fpga.compiler import SIM, compile_model
from mmfree_fpga.driver.core import CoreError, VerifyError
from mmfree_fpga.golden import GoldenModel
from mmfree_fpga.isa import Space

require_verilator()




@pytest.fixture(scope="module")
def images(device):
    """The shipped model's images, written with verify=True (one CRC per image)."""
    compiled = compile_model(GoldenModel(SHIPPED), SIM)
    imgs = compiled.images()
    t0 = time.monotonic()
    for space, words in imgs.items():
        device.write(space, 0, words, verify=True)
    print(f"\nupload + verify: {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return imgs


def test_identify_build_id(device):
    ident = device.identify()
    assert ident.version == C.VERSION and ident.build_id == 0      # top.Accelerator's default


def test_crc_of_every_image_after_upload(device, images):
    for space, words in images.items():
        n = len(words)
        t0 = time.monotonic()
        got = device.crc(space, 0, n)
        dt = time.monotonic() - t0
        print(f"CRC {space.name}[0:+{n:,}]: {dt:.2f} s", file=sys.stderr)
        assert got == C.words_crc(space, words, SIM.lanes), space.name
    w = np.asarray(images[Space.WEIGHTS], dtype=np.uint8)
    assert len(w) > 40_000                                        # the whole shipped model
    # odd ranges: the CRC is zlib.crc32 of the bytes READ returns
    for a, n in [(1, 3), (len(w) // 2 + 1, 17), (len(w) - 5, 5), (7, 0)]:
        read = device.read(Space.WEIGHTS, a, n)
        assert np.array_equal(read, w[a:a + n])
        assert device.crc(Space.WEIGHTS, a, n) == zlib.crc32(read.tobytes()) \
            == C.words_crc(Space.WEIGHTS, w[a:a + n], SIM.lanes)
    r = device.run([5], 8)                                        # a token in between
    assert len(r.ids) == 8
    assert device.crc(Space.WEIGHTS, 0, len(w)) == C.words_crc(Space.WEIGHTS, w, SIM.lanes)


def test_verify_refuses_other_words(device, images):
    size = SIM.size(Space.WEIGHTS)
    rng = np.random.default_rng(5)
    nb = C.word_bytes(Space.WEIGHTS, SIM.lanes)
    extra = rng.integers(0, 256, (8, nb), dtype=np.uint8)
    device.write(Space.WEIGHTS, size - 8, extra, verify=True)     # past the model
    device.verify(Space.WEIGHTS, size - 8, extra)
    other = extra.copy()
    other[3, 7] ^= 0x10                                           # one bit
    with pytest.raises(VerifyError, match=rf"WEIGHTS\[{size - 8}:\+8\] does not hold") as e:
        device.verify(Space.WEIGHTS, size - 8, other)
    assert e.value.device == zlib.crc32(extra.tobytes())
    assert e.value.host == zlib.crc32(other.tobytes())
    params = np.arange(-3, 3, dtype=np.int32)
    p0 = SIM.size(Space.PARAMS) - len(params)
    device.write(Space.PARAMS, p0, params, verify=True)
    with pytest.raises(VerifyError):
        device.verify(Space.PARAMS, p0, params[::-1])


def test_crc_refusals(device):
    size = SIM.size(Space.WEIGHTS)
    with pytest.raises(CoreError, match="BAD_RANGE"):
        device.crc(Space.WEIGHTS, size - 1, 2)
    assert device.crc(Space.WEIGHTS, size, 0) == 0
    device.transport.write(C.encode_crc(len(Space), 0, 1))
    assert C.read_status(device.transport.read) == C.Status.BAD_SPACE
    assert device.identify().version == C.VERSION                 # still in step


def test_upload_is_skipped_when_the_device_holds_the_model(device, images, capsys):
    """The backend's upload: a device that already holds the images (every CRC matches) is
    not written again; a changed word makes it write everything and verify."""
    from mmfree_fpga.driver.backend import upload

    r = upload(device, images, progress=lambda *a: None)
    assert sorted(r["skipped"]) == sorted(images) and r["bytes"] == 0
    assert "already on the device" in capsys.readouterr().err
    device.write(Space.PROGRAM, 3, [0])      # PROGRAM now differs, as after a broken upload
    seen = []
    r = upload(device, images, progress=lambda done, total, t: seen.append((done, total)))
    assert Space.PROGRAM not in r["skipped"] and len(r["skipped"]) == len(images) - 1
    assert r["bytes"] == len(images[Space.PROGRAM]) * 16       # only that space resent
    assert seen[-1][0] == seen[-1][1] == r["bytes"]
    assert "PARAMS" in capsys.readouterr().err                  # "... already there"
    device.verify(Space.PROGRAM, 0, images[Space.PROGRAM])


def test_cli_info_of_the_simulated_accelerator(capsys):
    """``mmfree-fpga info --backend sim``: IDENTIFY's fields, and a fresh device does not
    hold the model."""
    import json

    from mmfree_fpga.cli import main

    assert main(["info", "--backend", "sim", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "sim" and info["lanes"] == SIM.lanes
    assert info["command_set_version"] == C.VERSION
    assert info["words"]["WEIGHTS"] == SIM.weight_words
    assert info["model_loaded"] is False
