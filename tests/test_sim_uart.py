"""cocotb regression for the UART (hw/mmfree_hw/uart.py) on the Verilog Amaranth emits,
against cocotbext-uart's UartSource / UartSink as the peer (sim/test_uart.py): full
duplex at 115200, 1 M and 3 Mbaud from a 50 MHz clock (3 Mbaud also from 48 MHz: an
integer divider, and 100 MHz), with the peer's clock exact and 2 % fast and slow; random
back-pressure on the received stream, random valid gaps on the sent one; a framing error
and a break, each followed by intact bytes; and an overrun."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))

from runner import check  # noqa: E402

from mmfree_hw.uart import UART  # noqa: E402

# (clock MHz, baud, peer error, bytes each way): few bytes at the slow rates, whose frames
# cost 4,340 cycles each at 115200 baud (Icarus and the per-cycle stream coroutines run
# ~20 k cycles/s here)
LINK = [
    (50, 115_200, 0.0, 12), (50, 115_200, +0.02, 10), (50, 115_200, -0.02, 10),
    (50, 1_000_000, 0.0, 80), (50, 1_000_000, +0.02, 80), (50, 1_000_000, -0.02, 80),
    (50, 3_000_000, 0.0, 300), (50, 3_000_000, +0.02, 300), (50, 3_000_000, -0.02, 300),
    (48, 3_000_000, +0.02, 150), (100, 3_000_000, -0.02, 150),
]


def run(record_property, clk_mhz, baud, **params):
    check(record_property, UART(clk_freq=clk_mhz * 1e6, baud=baud), "uart", "test_uart",
          {"clk_mhz": clk_mhz, "baud": baud, "period_ns": round(1e3 / clk_mhz), **params},
          only=["uart"])


@pytest.mark.parametrize("clk_mhz,baud,peer_error,n", LINK,
                         ids=[f"{c}MHz-{b}-{e:+.0%}" for c, b, e, _ in LINK])
def test_uart_link(record_property, clk_mhz, baud, peer_error, n):
    run(record_property, clk_mhz, baud, suite="link", peer_error=peer_error, bytes=n,
        seed=LINK.index((clk_mhz, baud, peer_error, n)))


def test_uart_framing(record_property):
    run(record_property, 50, 3_000_000, suite="framing", peer_error=0.02, seed=20)


def test_uart_overrun(record_property):
    run(record_property, 50, 3_000_000, suite="overrun", seed=21)
