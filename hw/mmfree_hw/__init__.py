"""Gateware for the MatMul-free LM accelerator (Amaranth 0.5).

Every unit imports its number formats from ``mmfree_fpga.numerics`` (the one definition the
golden model uses too) and nothing else of the host package.
"""
