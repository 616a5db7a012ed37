// sdram_stream_tb.v: SdramController (Amaranth, converted as module `sdram_dut`, with the
// LiteDRAM core it instantiates) on the MT48LC16M16A2 chip model.
//
// The chip is clocked by the inverted system clock, as on the board, where the SDRAM clock
// is phase-shifted from the controller's (litex-boards' ULX3S target: a PLL output at 90
// degrees into an ODDRX1F): LiteDRAM's GENSDRPHY registers a command on a system clock edge
// e and expects the chip to take it within that cycle, and captures read data at edge e + CL
// (its native port's rdata.valid is timed from the command, read_latency = CL + 1). A chip
// on the system clock itself would take the command at e + 1 and return data a cycle after
// rdata.valid (seen: the power-up check fails). In a zero-delay simulation any phase
// strictly between 0 and 360 degrees gives the same cycles; 180 is the one a single clock
// gives.
// Top of the Verilator harness sim/sdram_stream_tb.cpp; built by sim/sdram_stream_tb.py.
// Plain port names (no Amaranth "__") for the C++; the chip model's statistics come out as
// ports (hierarchical references). dq_flip XORs the data the controller reads: a broken
// data bus for the power-up check's test.
module sdram_stream_tb #(
    parameter integer TCK_PS = 20000,
    parameter integer ROWS = 8192
) (
    input clk,
    input rst,
    input [15:0] dq_flip,
    input cmd_valid,
    output cmd_ready,
    input cmd_we,
    input [23:0] cmd_addr,
    input wdata_valid,
    output wdata_ready,
    input [15:0] wdata_data,
    input [1:0] wdata_we,
    output rdata_valid,
    output [15:0] rdata_data,
    output init_done,
    output init_error,
    output wdata_underrun,
    output [31:0] chip_violations,
    output [31:0] chip_rules,
    output [63:0] chip_cycles,
    output [63:0] chip_data_cycles,
    output [63:0] chip_activates,
    output [63:0] chip_refreshes
);
    wire cke, cs_n, ras_n, cas_n, we_n, dq_oe;
    wire [1:0] ba, dm;
    wire [12:0] a;
    wire [15:0] dq_o, dq_chip;

    sdram_dut dut (
        .clk(clk), .rst(rst),
        .cmd__valid(cmd_valid), .cmd__ready(cmd_ready), .cmd__payload({cmd_addr, cmd_we}),
        .wdata__valid(wdata_valid), .wdata__ready(wdata_ready),
        .wdata__payload({wdata_we, wdata_data}),
        .rdata__valid(rdata_valid), .rdata__ready(1'b1), .rdata__payload(rdata_data),
        .init_done(init_done), .init_error(init_error), .wdata_underrun(wdata_underrun),
        .pins__cke(cke), .pins__cs_n(cs_n), .pins__ras_n(ras_n), .pins__cas_n(cas_n),
        .pins__we_n(we_n), .pins__ba(ba), .pins__a(a), .pins__dm(dm),
        .pins__dq_o(dq_o), .pins__dq_oe(dq_oe), .pins__dq_i(dq_chip ^ dq_flip)
    );

    wire sdram_clk = ~clk;

    mt48lc16m16a2_split #(.TCK_PS(TCK_PS), .ROWS(ROWS)) u_chip (
        .clk(sdram_clk), .cke(cke), .cs_n(cs_n), .ras_n(ras_n), .cas_n(cas_n), .we_n(we_n),
        .ba(ba), .a(a), .dm(dm), .dq_o(dq_o), .dq_oe(dq_oe), .dq_i(dq_chip)
    );

    assign chip_violations = u_chip.chip.violations;
    assign chip_rules = u_chip.chip.rules;
    assign chip_cycles = u_chip.chip.cycles;
    assign chip_data_cycles = u_chip.chip.data_cycles;
    assign chip_activates = u_chip.chip.activates;
    assign chip_refreshes = u_chip.chip.refreshes;
endmodule
