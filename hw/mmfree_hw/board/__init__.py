"""Board shells: the PLL, pins and IO buffers around the simulated design.

``mmfree_fpga.boards`` says which board has which configuration."""
