"""The compiled simulation of the accelerator: Verilator, the byte-stream harness
(``harness.cpp``) and its cached build (``build.py``)."""

from .build import PORTS, VerilatorMissing, build, verilator_root

__all__ = ["PORTS", "VerilatorMissing", "build", "verilator_root"]
