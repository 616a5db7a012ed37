"""The serial transport (sw/mmfree_fpga/driver/serial_port.py) against a pseudo-terminal,
which the kernel's tty layer serves like a USB UART: bytes both ways, exact reads, short
reads with a deadline, timeouts; and the failures a user meets: no device, a busy port, the
FTDI latency timer."""

import os
import time

import pytest

from mmfree_fpga.driver.serial_port import SerialTransport, tune_latency_timer
from mmfree_fpga.driver.transport import LinkError


@pytest.fixture
def pty_pair():
    import tty
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    path = os.ttyname(slave)
    yield master, path
    os.close(master)
    os.close(slave)


def _drain(fd, n, timeout=2.0):
    out, end = b"", time.monotonic() + timeout
    os.set_blocking(fd, False)
    while len(out) < n and time.monotonic() < end:
        try:
            out += os.read(fd, n - len(out))
        except BlockingIOError:
            time.sleep(0.001)
    return out


def test_bytes_both_ways(pty_pair):
    master, path = pty_pair
    data = bytes(range(256)) * 4
    with SerialTransport(path, baud=115200, timeout=1.0) as t:
        t.write(data)
        assert _drain(master, len(data)) == data
        os.write(master, data[:300])
        assert t.read(100) == data[:100]
        assert t.read(200) == data[100:300]


def test_read_some_returns_short_and_on_time(pty_pair):
    master, path = pty_pair
    with SerialTransport(path, timeout=1.0) as t:
        start = time.monotonic()
        assert t.read_some(10, timeout=0.05) == b""
        assert time.monotonic() - start < 0.5
        os.write(master, b"abc")
        got = b""
        while len(got) < 3:
            got += t.read_some(10, timeout=0.5)
        assert got == b"abc"


def test_read_times_out_with_a_message(pty_pair):
    master, path = pty_pair
    with SerialTransport(path, timeout=0.1) as t:
        os.write(master, b"xy")
        with pytest.raises(LinkError, match=r"no answer for 0.1 s \(2 of 5 bytes came\)"):
            t.read(5)


def test_no_device():
    with pytest.raises(LinkError, match="no device at /dev/ttyNOPE0"):
        SerialTransport("/dev/ttyNOPE0")


def test_busy_port(pty_pair):
    _, path = pty_pair
    with SerialTransport(path):
        with pytest.raises(LinkError, match="is busy: another program has it open"):
            SerialTransport(path)


def test_closed_transport_refuses(pty_pair):
    _, path = pty_pair
    t = SerialTransport(path)
    t.close()
    t.close()                                   # idempotent
    with pytest.raises(LinkError, match="closed"):
        t.write(b"x")
    with pytest.raises(LinkError, match="closed"):
        t.read(1)


def test_latency_timer(tmp_path):
    dev = tmp_path / "ttyUSB7"
    dev.mkdir()
    timer = dev / "latency_timer"
    timer.write_text("16\n")
    assert tune_latency_timer("/dev/ttyUSB7", sysfs=tmp_path) == "set"
    assert timer.read_text().strip() == "1"
    assert tune_latency_timer("/dev/ttyUSB7", sysfs=tmp_path) is None    # already 1 ms
    assert tune_latency_timer("/dev/ttyS0", sysfs=tmp_path) is None      # not an FTDI
    timer.write_text("16\n")
    os.chmod(timer, 0o444)
    if os.access(timer, os.W_OK):                 # root writes read-only files
        return
    line = tune_latency_timer("/dev/ttyUSB7", sysfs=tmp_path)
    assert line.startswith(f"echo 1 | sudo tee {timer}") and "16 ms" in line
