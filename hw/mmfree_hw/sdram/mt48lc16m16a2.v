// mt48lc16m16a2.v: a timing-checked model of the ULX3S's SDR SDRAM chip, Micron
// MT48LC16M16A2 (256 Mb: 4 banks x 8192 rows x 512 columns x 16 bits), for Icarus (4-state)
// and Verilator (no --timing). Plain Verilog-2005, no delays.
//
// WHAT IT MODELS
//   Commands (CS# low, CKE high; RAS#/CAS#/WE#): NOP, COMMAND INHIBIT (CS# high), ACTIVE,
//   READ / WRITE (A10 = auto precharge), PRECHARGE (A10 = all banks, else BA), AUTO REFRESH,
//   LOAD MODE REGISTER, BURST TERMINATE. Mode register: burst length 1/2/4/8, sequential or
//   interleaved, CAS latency 2 or 3 (CL is taken from the mode register), write burst mode
//   M9 (programmed length / single location). Operating mode M8:M7 != 00 (LiteDRAM's SDR
//   init sets M8, a DDR "DLL reset", in its first LOAD MODE) is a warning (`warnings` + 1)
//   and leaves the mode "reserved": a READ / WRITE then is a MODE violation, until a LOAD
//   MODE with M8:M7 = 00. Nonzero A12:A10 or BA in a LOAD MODE are warnings.
//   Data: `mem` stores written words, honouring dm (high = byte not written; an X dm bit
//   stores an X byte); read data is driven CL cycles after the READ for BL beats, `dq` is
//   16'bz otherwise. Never-written words read as X in a 4-state simulator (0 in Verilator).
//   A READ / WRITE that breaks a rule (tRCD, closed bank, invalid mode, row out of model)
//   still takes effect for the timing bookkeeping but drives / stores X.
//   Bursts: a READ cuts the previous read burst from its own first beat on; BURST
//   TERMINATE and PRECHARGE (of the burst's bank) cut read beats due >= CL cycles after
//   them and write beats from their own edge on; READ / WRITE cut a write burst.
//   Auto precharge: the bank closes at once for commands; its internal precharge starts at
//   max(READ + BL, ACTIVE + tRAS) for READ, max(last data + tWR(AP), ACTIVE + tRAS) for
//   WRITE ("tRAS lockout", not flagged), and tRP (tDAL for WRITE) runs from there.
//
// NOT MODELLED: read DQM masking (dm is used with write beats only, as LiteDRAM's GENSDRPHY
//   does), self refresh, power-down, clock suspend and the CKE timings (CKE must stay high
//   once init began: rule CKE), setup / hold and other sub-cycle timings (tAC, tOH, tHZ,
//   tLZ), the average refresh rate (only the gap between AUTO REFRESHes), concurrent auto
//   precharge interrupts. Full-page bursts are a MODE violation.
//
// CYCLE CONVENTION: everything happens at rising edges of clk. Cycle (edge) 0 is the first
//   rising edge the model sees: power on. `cycles` is the number of edges seen (so during
//   edge k's processing it is k, and k + 1 after it). A command is the pin state registered
//   at an edge; "n cycles between two commands" is the difference of their edge numbers,
//   checked as >= ceil(t_ps / TCK_PS) (and >= 1). A READ registered at edge r drives beat i
//   from just after edge r + CL + i - 1 until just after edge r + CL + i (so a controller
//   register clocked by edge r + CL + i captures it). A WRITE registered at edge w takes its
//   beats at edges w .. w + BL - 1 (dm with each beat).
//
// PARAMETERS (all times in ps; cycle counts are localparams: ceil(t / TCK_PS), at least 1)
//   TCK_PS = 20000        clock period
//   ROWS = 8192           rows stored per bank (the array is 4 * ROWS * 512 words): tests use
//                         fewer; an ACTIVE to a row >= ROWS is rule ROW_RANGE (then reads X,
//                         writes are dropped)
//   FATAL = 0             1: $fatal(1, ...) at the first violation, after its message
//   POWERUP_PS = 100 us   power-up wait before the first command other than NOP / INHIBIT
//   TREFI_PS = 7812.5 ns  64 ms / 8192: REFRESH is flagged when the gap between two AUTO
//                         REFRESHes after init exceeds floor(9 * TREFI_PS / TCK_PS) cycles
//                         (LiteDRAM's postponing allowance: 8 postponed)
//   TRP_PS 20 ns, TRCD_PS 20 ns, TRAS_PS 44 ns, TRAS_MAX_PS 120 us (floor: a row open more
//   than that many cycles is flagged, once, at the edge it happens), TRC_PS 66 ns, TRRD_PS
//   15 ns, TRFC_PS 66 ns, TWR_PS 15 ns (last write data to PRECHARGE), TWR_AP_PS 7.5 ns
//   (auto precharge after a WRITE starts 1 CLK + this after the last data), TMRD_CK 2
//   (cycles), TCK_CL2_PS 10 ns / TCK_CL3_PS 7.5 ns (tCK min, checked at LOAD MODE).
//   The defaults are LiteDRAM's MT48LC16M16 module class (= Micron's -75 speed grade, safe
//   for -6A / -7E too) plus the datasheet's tRC, tMRD, tRAS max and tWR(AP). With the
//   datasheet's numbers tRC <= tRAS + tRP in cycles at every legal clock: only a larger
//   TRC_PS lets TRC fire alone.
//
// RULE BITS (`rules`, sticky; `violations` counts every flag)
//    0 TRP         PRECHARGE (or an auto precharge) to ACTIVE / AUTO REFRESH / LOAD MODE
//    1 TRCD        ACTIVE to READ / WRITE, same bank
//    2 TRAS        ACTIVE to PRECHARGE, same bank (min)
//    3 TRAS_MAX    row open longer than tRAS max (flagged while open)
//    4 TRC         ACTIVE to ACTIVE, same bank
//    5 TRRD        ACTIVE to ACTIVE, different banks
//    6 TRFC        AUTO REFRESH to any command
//    7 TWR         last write data to PRECHARGE, same bank
//    8 TDAL        WRITE with auto precharge: last data to ACTIVE / REFRESH / LOAD MODE is
//                  less than tWR(AP) + tRP
//    9 TMRD        LOAD MODE REGISTER to any command
//   10 POWERUP     a command before POWERUP_PS of clocks, or no NOP / INHIBIT with CKE high
//                  on the edge before the first PRECHARGE ALL
//   11 INIT_ORDER  first command after the wait not PRECHARGE ALL (it is ignored); ACTIVE /
//                  READ / WRITE (ignored) before 2 AUTO REFRESH and 1 LOAD MODE were seen
//                  since it (in any order: LiteDRAM's PALL, LMR, PALL, REF, REF, LMR is fine)
//   12 BANK_CLOSED READ / WRITE to a bank that is not open (or closing by auto precharge)
//   13 BANK_OPEN   ACTIVE to an open bank; AUTO REFRESH / LOAD MODE with a bank open
//   14 MODE        invalid mode register (burst length not 1/2/4/8, CL not 2/3), READ /
//                  WRITE without a valid mode (reserved operating mode), LOAD MODE in a burst
//   15 TCK         TCK_PS below tCK min for the CL loaded
//   16 REFRESH     refresh starvation (see TREFI_PS), flagged once per gap
//   17 BUS         contention: the controller drives dq (ctl_oe high, or the net differs
//                  from what the chip drives) on an edge the chip drives a read beat; or a
//                  WRITE while read beats are still due after it (they are dropped)
//   18 CKE         CKE not high after init began (power-down etc. not modelled), once per
//                  low stretch
//   19 X_INPUT     X / Z on CS#, RAS#, CAS#, WE# (CKE high) or on an address / bank bit the
//                  command uses: the command is ignored (4-state simulators only)
//   20 ROW_RANGE   ACTIVE to a row >= ROWS (row out of model)
//
// REPORTING: each flag prints one line
//   mt48lc16m16a2: <RULE> violated at cycle <k> bank <b>: need <n> cycles, saw <m>
// ("need at most <n> cycles" for TRAS_MAX and REFRESH; a negative "saw" for TRP / TDAL: the
// auto precharge has not even begun; rules without a cycle count print "... bank <b>:
// <what>"; bank -1: not bank-specific). With FATAL=1 it is followed by $fatal(1, "mt48lc16m16a2:
// <RULE> violated at cycle <k> (FATAL=1: stopping)"): Verilator prints "[<time>] %Fatal:
// mt48lc16m16a2.v:<line>: Assertion failed in <scope>: <that text>", then "%Error: ...: Verilog
// $stop" and "Aborting...", and the process exits with status 1 (Icarus: "FATAL: ...",
// status 1). Warnings print "mt48lc16m16a2: warning at cycle <k>: <what>".
// Statistics (plain regs, read them hierarchically; public for a Verilator harness):
// cycles, data_cycles (edges with a read or write data beat on the bus), activates,
// refreshes, reads, writes (READ / WRITE commands), precharges (PRECHARGE commands),
// violations, warnings, rules.
//
// TEST HOOKS: a testbench may set the reg `power_cycle` to 1: the next rising edge does
// nothing but return the model to its power-on state (counters, rules, banks, mode; the
// memory array is kept), and the edge after it is cycle 0. It may also zero `rules` and
// `violations` between two edges.
//
// PORTS: the SDRAM pins (dm and dq as the chip sees them), plus ctl_oe: the controller's dq
// output enable, only for exact contention checking (mt48lc16m16a2_split connects it; tie
// it to 1'b0 where it is not known: contention is then seen only from the net, 4-state).
//
// mt48lc16m16a2_split (below): the same chip with dq split as the controller side sees it,
// for a design that cannot have an inout (an Amaranth Instance): dq_o / dq_oe in (one oe for
// all 16 bits), dq_i out; inside, `dq = dq_oe ? dq_o : 16'bz` and the chip on that net, so
// dq_i is the resolved bus (the chip's read data while it drives).

/* verilator lint_off BLKSEQ */
// A behavioural model: one clocked block updates its state in order with blocking
// assignments; only the chip's dq drivers (rd_q, rd_oe) are nonblocking.

module mt48lc16m16a2 #(
    parameter integer TCK_PS = 20000,
    parameter integer ROWS = 8192,
    parameter integer FATAL = 0,
    parameter integer POWERUP_PS = 100_000_000,
    parameter integer TREFI_PS = 7_812_500,
    parameter integer TRP_PS = 20_000,
    parameter integer TRCD_PS = 20_000,
    parameter integer TRAS_PS = 44_000,
    parameter integer TRAS_MAX_PS = 120_000_000,
    parameter integer TRC_PS = 66_000,
    parameter integer TRRD_PS = 15_000,
    parameter integer TRFC_PS = 66_000,
    parameter integer TWR_PS = 15_000,
    parameter integer TWR_AP_PS = 7_500,
    parameter integer TMRD_CK = 2,
    parameter integer TCK_CL2_PS = 10_000,
    parameter integer TCK_CL3_PS = 7_500
) (
    input clk,
    input cke,
    input cs_n,
    input ras_n,
    input cas_n,
    input we_n,
    input [1:0] ba,
    input [12:0] a,
    input [1:0] dm,
    inout [15:0] dq,
    input ctl_oe
);
    // ------------------------------------------------------------------ rule bits
    localparam integer R_TRP = 0, R_TRCD = 1, R_TRAS = 2, R_TRAS_MAX = 3, R_TRC = 4,
        R_TRRD = 5, R_TRFC = 6, R_TWR = 7, R_TDAL = 8, R_TMRD = 9, R_POWERUP = 10,
        R_INIT_ORDER = 11, R_BANK_CLOSED = 12, R_BANK_OPEN = 13, R_MODE = 14, R_TCK = 15,
        R_REFRESH = 16, R_BUS = 17, R_CKE = 18, R_X_INPUT = 19, R_ROW_RANGE = 20;

    // ------------------------------------------------------------------ timing, cycles
    function integer ck(input integer t_ps);
        begin
            ck = (t_ps + TCK_PS - 1) / TCK_PS;
            if (ck < 1) ck = 1;
        end
    endfunction

    function signed [63:0] w64(input integer x);    // sign-extend to the edge counters' width
        begin
            w64 = {{32{x[31]}}, x};
        end
    endfunction

    localparam signed [63:0] TRP_CK = w64(ck(TRP_PS));
    localparam signed [63:0] TRCD_CK = w64(ck(TRCD_PS));
    localparam signed [63:0] TRAS_CK = w64(ck(TRAS_PS));
    localparam signed [63:0] TRAS_MAX_CK = w64(TRAS_MAX_PS / TCK_PS);
    localparam signed [63:0] TRC_CK = w64(ck(TRC_PS));
    localparam signed [63:0] TRRD_CK = w64(ck(TRRD_PS));
    localparam signed [63:0] TRFC_CK = w64(ck(TRFC_PS));
    localparam signed [63:0] TWR_CK = w64(ck(TWR_PS));
    localparam signed [63:0] TWR_AP_CK = 64'sd1 + w64(ck(TWR_AP_PS));
    localparam signed [63:0] TMRD = w64(TMRD_CK);
    localparam signed [63:0] POWERUP_CK = w64(ck(POWERUP_PS));
    localparam signed [63:0] REFRESH_GAP_CK = (64'sd9 * w64(TREFI_PS)) / w64(TCK_PS);
    localparam signed [63:0] NEVER = -(64'sd1 <<< 40);

    localparam integer WORDS = 4 * ROWS * 512;
    localparam integer AW = $clog2(WORDS);

    // ------------------------------------------------------------------ state
    reg [15:0] mem [0:WORDS-1];

    reg [63:0] cycles /* verilator public_flat_rd */;
    reg [63:0] data_cycles /* verilator public_flat_rd */;
    reg [63:0] activates /* verilator public_flat_rd */;
    reg [63:0] refreshes /* verilator public_flat_rd */;
    reg [63:0] reads /* verilator public_flat_rd */;
    reg [63:0] writes /* verilator public_flat_rd */;
    reg [63:0] precharges /* verilator public_flat_rd */;
    integer violations /* verilator public_flat_rd */;
    integer warnings /* verilator public_flat_rd */;
    reg [31:0] rules /* verilator public_flat_rd */;

    reg init_started, init_done, prev_cke_high, cke_flagged;
    integer init_refs, init_mrs;
    reg signed [63:0] last_ref, last_mrs;
    reg ref_flagged;

    reg b_open [0:3];
    reg b_row_ok [0:3];
    reg [12:0] b_row [0:3];
    reg signed [63:0] b_act [0:3];      // edge of the last ACTIVE
    reg signed [63:0] b_pre [0:3];      // edge the last precharge began (may be in the future)
    reg b_pre_wap [0:3];                // ... an auto precharge after a WRITE (tDAL)
    reg signed [63:0] b_wr [0:3];       // edge of the last write beat since the ACTIVE
    reg b_tras_flagged [0:3];

    reg [3:0] m_bl;                     // 1, 2, 4, 8
    reg [1:0] m_cl;                     // 2, 3
    reg m_inter, m_single, m_valid;

    // read commands on their way to the data bus: stage 1 holds the command of the last
    // edge, stage 2 of the one before; the one CL - 1 edges old starts (or cuts) the burst
    localparam [1:0] T_NONE = 2'd0, T_READ = 2'd1, T_STOP = 2'd2;
    reg [1:0] t1_kind, t2_kind;
    reg [1:0] t1_bank, t2_bank;
    reg [12:0] t1_row, t2_row;
    reg [8:0] t1_col, t2_col;
    reg [3:0] t1_bl, t2_bl;
    reg t1_inter, t2_inter, t1_ok, t2_ok;
    reg [3:0] t1_mask, t2_mask;         // T_STOP: the banks whose burst it cuts

    // the read burst being driven
    reg rb_active, rb_inter, rb_ok;
    reg [1:0] rb_bank;
    reg [12:0] rb_row;
    reg [8:0] rb_col;
    reg [3:0] rb_bl, rb_i;

    // the write burst being taken
    reg wb_active, wb_inter, wb_ok;
    reg [1:0] wb_bank;
    reg [12:0] wb_row;
    reg [8:0] wb_col;
    reg [3:0] wb_bl, wb_i;

    reg [15:0] rd_q;
    reg rd_oe;

    // test hook (see the header): set to 1 by a testbench, never by the model but to 0
    reg power_cycle;
    assign dq = rd_oe ? rd_q : 16'bz;

    // per-edge temporaries
    reg signed [63:0] k;
    reg cke_high, prev, is_pall, known, busy, ap, any_open, pending, valid_mode;
    reg [2:0] cmd;
    reg [1:0] b;
    reg [1:0] n_kind, n_bank;           // the token of this edge's command
    reg [12:0] n_row;
    reg [8:0] n_col;
    reg [3:0] n_bl, n_mask;
    reg n_inter, n_ok;
    reg [3:0] mask;
    reg [12:0] row;
    reg [8:0] col;
    reg [3:0] wbl;
    reg [2:0] cl_code;
    reg [AW-1:0] idx;
    reg [15:0] wd;
    reg signed [63:0] best;
    integer i, best_bank;

    // (RAS#, CAS#, WE#)
    localparam [2:0] C_MRS = 3'b000, C_REF = 3'b001, C_PRE = 3'b010, C_ACT = 3'b011,
        C_WRITE = 3'b100, C_READ = 3'b101, C_BST = 3'b110, C_NOP = 3'b111;

    // ------------------------------------------------------------------ helpers
    function [8*11-1:0] rule_name(input integer r);
        case (r)
            R_TRP: rule_name = "TRP";
            R_TRCD: rule_name = "TRCD";
            R_TRAS: rule_name = "TRAS";
            R_TRAS_MAX: rule_name = "TRAS_MAX";
            R_TRC: rule_name = "TRC";
            R_TRRD: rule_name = "TRRD";
            R_TRFC: rule_name = "TRFC";
            R_TWR: rule_name = "TWR";
            R_TDAL: rule_name = "TDAL";
            R_TMRD: rule_name = "TMRD";
            R_POWERUP: rule_name = "POWERUP";
            R_INIT_ORDER: rule_name = "INIT_ORDER";
            R_BANK_CLOSED: rule_name = "BANK_CLOSED";
            R_BANK_OPEN: rule_name = "BANK_OPEN";
            R_MODE: rule_name = "MODE";
            R_TCK: rule_name = "TCK";
            R_REFRESH: rule_name = "REFRESH";
            R_BUS: rule_name = "BUS";
            R_CKE: rule_name = "CKE";
            R_X_INPUT: rule_name = "X_INPUT";
            R_ROW_RANGE: rule_name = "ROW_RANGE";
            default: rule_name = "?";
        endcase
    endfunction

    task note(input integer r);
        begin
            violations = violations + 1;
            rules = rules | (32'd1 << r);
        end
    endtask

    task stop_if_fatal(input integer r);
        begin
            if (FATAL != 0)
                $fatal(1, "mt48lc16m16a2: %0s violated at cycle %0d (FATAL=1: stopping)",
                       rule_name(r), k);
        end
    endtask

    // a timing rule: ``need`` cycles required, ``saw`` seen
    task flag(input integer r, input integer bank, input signed [63:0] need,
              input signed [63:0] saw);
        begin
            note(r);
            $display("mt48lc16m16a2: %0s violated at cycle %0d bank %0d: need %0d cycles, saw %0d",
                     rule_name(r), k, bank, need, saw);
            stop_if_fatal(r);
        end
    endtask

    // a maximum: at most ``limit`` cycles allowed, ``saw`` seen
    task flag_max(input integer r, input integer bank, input signed [63:0] limit,
                  input signed [63:0] saw);
        begin
            note(r);
            $display("mt48lc16m16a2: %0s violated at cycle %0d bank %0d: need at most %0d cycles, saw %0d",
                     rule_name(r), k, bank, limit, saw);
            stop_if_fatal(r);
        end
    endtask

    // a rule without a cycle count
    task flag_msg(input integer r, input integer bank, input [8*80-1:0] what);
        begin
            note(r);
            $display("mt48lc16m16a2: %0s violated at cycle %0d bank %0d: %0s",
                     rule_name(r), k, bank, what);
            stop_if_fatal(r);
        end
    endtask

    task warn(input [8*100-1:0] what);
        begin
            warnings = warnings + 1;
            $display("mt48lc16m16a2: warning at cycle %0d: %0s", k, what);
        end
    endtask

    function integer bn(input [1:0] x);   // a bank number for the messages
        begin
            bn = {30'd0, x};
        end
    endfunction

    function [8:0] burst_col(input [8:0] start, input [3:0] beat, input [3:0] bl,
                             input inter);
        reg [8:0] m;
        begin
            m = {5'd0, bl - 4'd1};
            if (inter) burst_col = (start & ~m) | ((start ^ {5'd0, beat}) & m);
            else burst_col = (start & ~m) | ((start + {5'd0, beat}) & m);
        end
    endfunction

    function [AW-1:0] index(input [1:0] bank, input [12:0] r, input [8:0] c);
        /* verilator lint_off UNUSEDSIGNAL */
        reg [31:0] full;        // bits AW and up are 0 (row < ROWS)
        /* verilator lint_on UNUSEDSIGNAL */
        begin
            full = ({30'd0, bank} * ROWS + {19'd0, r}) * 512 + {23'd0, c};
            index = full[AW-1:0];
        end
    endfunction

    // ACTIVE / REFRESH / LOAD MODE: bank ``bb`` precharged at least tRP ago (tDAL after a
    // WRITE with auto precharge)
    task check_precharged(input [1:0] bb);
        begin
            if (k - b_pre[bb] < TRP_CK) begin
                if (b_pre_wap[bb]) flag(R_TDAL, bn(bb), TWR_AP_CK + TRP_CK, k - b_wr[bb]);
                else flag(R_TRP, bn(bb), TRP_CK, k - b_pre[bb]);
            end
        end
    endtask

    // AUTO REFRESH / LOAD MODE: all banks idle, the latest precharge tRP ago
    task check_all_idle;
        begin
            any_open = 0;
            best = NEVER;
            best_bank = 0;
            for (i = 3; i >= 0; i = i - 1) begin
                if (b_open[i]) begin
                    any_open = 1;
                    best_bank = i;
                end
            end
            if (any_open) flag_msg(R_BANK_OPEN, best_bank, "AUTO REFRESH / LOAD MODE with a bank open");
            best_bank = -1;
            for (i = 0; i < 4; i = i + 1) begin
                if (!b_open[i] && b_pre[i] > best) begin
                    best = b_pre[i];
                    best_bank = i;
                end
            end
            if (best_bank >= 0) check_precharged(best_bank[1:0]);
        end
    endtask

    task auto_precharge(input [1:0] bb, input signed [63:0] earliest, input wap);
        begin
            b_open[bb] = 0;
            b_pre[bb] = earliest > b_act[bb] + TRAS_CK ? earliest : b_act[bb] + TRAS_CK;
            b_pre_wap[bb] = wap;
        end
    endtask

    // READ / WRITE: the common checks; ``ok``: whether the data are meaningful
    task access_check(input [1:0] bb, output ok);
        begin
            ok = 1;
            if (!m_valid) begin
                flag_msg(R_MODE, bn(bb), "READ / WRITE without a valid standard mode register");
                ok = 0;
            end
            if (!b_open[bb]) begin
                flag_msg(R_BANK_CLOSED, bn(bb), "READ / WRITE to a bank that is not open");
                ok = 0;
            end else begin
                if (k - b_act[bb] < TRCD_CK) begin
                    flag(R_TRCD, bn(bb), TRCD_CK, k - b_act[bb]);
                    ok = 0;
                end
                if (!b_row_ok[bb]) ok = 0;
            end
        end
    endtask

    // ------------------------------------------------------------------ power on
    task power_on;
        begin
            cycles = 0;
            data_cycles = 0;
            activates = 0;
            refreshes = 0;
            reads = 0;
            writes = 0;
            precharges = 0;
            violations = 0;
            warnings = 0;
            rules = 0;
            init_started = 0;
            init_done = 0;
            prev_cke_high = 0;
            cke_flagged = 0;
            init_refs = 0;
            init_mrs = 0;
            last_ref = NEVER;
            last_mrs = NEVER;
            ref_flagged = 0;
            for (i = 0; i < 4; i = i + 1) begin
                b_open[i] = 0;
                b_row_ok[i] = 0;
                b_row[i] = 0;
                b_act[i] = NEVER;
                b_pre[i] = NEVER;
                b_pre_wap[i] = 0;
                b_wr[i] = NEVER;
                b_tras_flagged[i] = 0;
            end
            m_bl = 1;
            m_cl = 2;
            m_inter = 0;
            m_single = 0;
            m_valid = 0;
            t1_kind = T_NONE;
            t2_kind = T_NONE;
            rb_active = 0;
            wb_active = 0;
        end
    endtask

    initial begin
        power_cycle = 0;
        power_on;
        rd_q = 16'hxxxx;
        rd_oe = 1'b0;
    end

    // ------------------------------------------------------------------ every edge
    always @(posedge clk) begin
      if (power_cycle) begin
        power_on;
        power_cycle = 0;
        rd_oe <= 1'b0;
      end else begin
        k = $signed(cycles);
        busy = 0;
        cke_high = cke === 1'b1;

        // the read beat due at this edge (driven since the last one): contention
        if (rd_oe) begin
            busy = 1;
            if (ctl_oe === 1'b1 || dq !== rd_q)
                flag_msg(R_BUS, bn(rb_bank), "the controller drives dq on a read beat of the chip");
        end

        // conditions that arise without a command
        if (init_done && !ref_flagged && k - last_ref > REFRESH_GAP_CK) begin
            ref_flagged = 1;
            flag_max(R_REFRESH, -1, REFRESH_GAP_CK, k - last_ref);
        end
        for (i = 0; i < 4; i = i + 1) begin
            if (b_open[i] && !b_tras_flagged[i] && k - b_act[i] > TRAS_MAX_CK) begin
                b_tras_flagged[i] = 1;
                flag_max(R_TRAS_MAX, i, TRAS_MAX_CK, k - b_act[i]);
            end
        end

        // the command
        cmd = {ras_n, cas_n, we_n};
        n_kind = T_NONE;
        if (!init_started) begin
            prev = prev_cke_high;
            prev_cke_high = cke_high;
            if (!cke_high) begin
                // power-up with CKE low: nothing registered
            end else if (cs_n === 1'b1) begin
                // COMMAND INHIBIT
            end else if (^{cs_n, cmd} === 1'bx) begin
                flag_msg(R_X_INPUT, -1, "X / Z on CS# / RAS# / CAS# / WE# with CKE high");
            end else if (cmd != C_NOP) begin
                is_pall = cmd == C_PRE && a[10] === 1'b1;
                if (k < POWERUP_CK) flag(R_POWERUP, -1, POWERUP_CK, k);
                else if (!is_pall)
                    flag_msg(R_INIT_ORDER, -1, "the first command after power-up must be PRECHARGE ALL");
                if (is_pall) begin
                    if (!prev)
                        flag_msg(R_POWERUP, -1, "no NOP / INHIBIT with CKE high before the first PRECHARGE ALL");
                    init_started = 1;
                    precharges = precharges + 1;
                    for (i = 0; i < 4; i = i + 1) begin
                        b_pre[i] = k;
                        b_pre_wap[i] = 0;
                    end
                end
            end
        end else if (!cke_high) begin
            if (!cke_flagged) flag_msg(R_CKE, -1, "CKE low after init began (not modelled)");
            cke_flagged = 1;
        end else begin
            cke_flagged = 0;
            if (cs_n === 1'b1) begin
                // COMMAND INHIBIT
            end else if (^{cs_n, cmd} === 1'bx) begin
                flag_msg(R_X_INPUT, -1, "X / Z on CS# / RAS# / CAS# / WE#");
            end else if (cmd != C_NOP) begin
                case (cmd)
                    C_ACT: known = ^{a, ba} !== 1'bx;
                    C_MRS: known = ^a !== 1'bx;
                    C_READ, C_WRITE: known = ^{a[10], a[8:0], ba} !== 1'bx;
                    C_PRE: known = a[10] === 1'b1 || (a[10] === 1'b0 && ^ba !== 1'bx);
                    default: known = 1;
                endcase
                if (!known) begin
                    flag_msg(R_X_INPUT, -1, "X / Z on an address / bank bit the command uses");
                end else begin
                    b = ba;
                    ap = a[10];
                    col = a[8:0];
                    if (k - last_ref < TRFC_CK) flag(R_TRFC, -1, TRFC_CK, k - last_ref);
                    if (k - last_mrs < TMRD) flag(R_TMRD, -1, TMRD, k - last_mrs);
                    if ((cmd == C_ACT || cmd == C_READ || cmd == C_WRITE) && !init_done) begin
                        flag_msg(R_INIT_ORDER, bn(b), "ACTIVE / READ / WRITE before init (PRECHARGE ALL, 2 AUTO REFRESH, LOAD MODE)");
                    end else begin
                        case (cmd)
                            C_ACT: begin
                                row = a;
                                if (b_open[b]) flag_msg(R_BANK_OPEN, bn(b), "ACTIVE to an open bank");
                                check_precharged(b);
                                if (k - b_act[b] < TRC_CK) flag(R_TRC, bn(b), TRC_CK, k - b_act[b]);
                                best = TRRD_CK;
                                best_bank = -1;
                                for (i = 0; i < 4; i = i + 1) begin
                                    if (i != bn(b) && k - b_act[i] < best) begin
                                        best = k - b_act[i];
                                        best_bank = i;
                                    end
                                end
                                if (best_bank >= 0) flag(R_TRRD, bn(b), TRRD_CK, best);
                                b_row_ok[b] = {19'd0, row} < ROWS;
                                if (!b_row_ok[b]) flag_msg(R_ROW_RANGE, bn(b), "ACTIVE to a row >= ROWS (row out of model)");
                                b_open[b] = 1;
                                b_row[b] = row;
                                b_act[b] = k;
                                b_pre[b] = NEVER;
                                b_pre_wap[b] = 0;
                                b_wr[b] = NEVER;
                                b_tras_flagged[b] = 0;
                                activates = activates + 1;
                            end
                            C_READ: begin
                                any_open = b_open[b];
                                access_check(b, n_ok);
                                n_kind = T_READ;
                                n_bank = b;
                                n_row = b_row[b];
                                n_col = col;
                                n_bl = m_bl;
                                n_inter = m_inter;
                                wb_active = 0;
                                reads = reads + 1;
                                if (ap && any_open) auto_precharge(b, k + {60'd0, m_bl}, 0);
                            end
                            C_WRITE: begin
                                any_open = b_open[b];
                                access_check(b, wb_ok);
                                pending = rb_active || t1_kind == T_READ || t2_kind == T_READ;
                                if (pending) begin
                                    flag_msg(R_BUS, bn(b), "WRITE while read data are still due after it (dropped)");
                                    rb_active = 0;
                                    if (t1_kind == T_READ) t1_kind = T_NONE;
                                    if (t2_kind == T_READ) t2_kind = T_NONE;
                                end
                                wbl = m_single ? 4'd1 : m_bl;
                                wb_active = any_open;
                                wb_bank = b;
                                wb_row = b_row[b];
                                wb_col = col;
                                wb_i = 0;
                                wb_bl = wbl;
                                wb_inter = m_inter;
                                writes = writes + 1;
                                if (ap && any_open) begin
                                    b_wr[b] = k + {60'd0, wbl} - 1;
                                    auto_precharge(b, k + {60'd0, wbl} - 1 + TWR_AP_CK, 1);
                                end
                            end
                            C_PRE: begin
                                mask = ap ? 4'hf : 4'd1 << b;
                                n_kind = T_STOP;
                                n_mask = mask;
                                if (wb_active && mask[wb_bank]) wb_active = 0;
                                precharges = precharges + 1;
                                for (i = 0; i < 4; i = i + 1) begin
                                    if (mask[i]) begin
                                        if (!b_open[i]) begin
                                            // idle or auto-precharging bank: a NOP (during
                                            // init, a PRECHARGE ALL restarts tRP)
                                            if (!init_done && b_pre[i] <= k) begin
                                                b_pre[i] = k;
                                                b_pre_wap[i] = 0;
                                            end
                                        end else begin
                                            if (k - b_act[i] < TRAS_CK) flag(R_TRAS, i, TRAS_CK, k - b_act[i]);
                                            if (k - b_wr[i] < TWR_CK) flag(R_TWR, i, TWR_CK, k - b_wr[i]);
                                            b_open[i] = 0;
                                            b_pre[i] = k;
                                            b_pre_wap[i] = 0;
                                        end
                                    end
                                end
                            end
                            C_REF: begin
                                check_all_idle;
                                last_ref = k;
                                ref_flagged = 0;
                                refreshes = refreshes + 1;
                                if (!init_done) init_refs = init_refs + 1;
                            end
                            C_MRS: begin
                                check_all_idle;
                                if (rb_active || t1_kind == T_READ || t2_kind == T_READ || wb_active)
                                    flag_msg(R_MODE, -1, "LOAD MODE REGISTER during a burst");
                                valid_mode = 1;
                                if (a[2:0] > 3'd3) begin
                                    flag_msg(R_MODE, -1, "burst length code not 1 / 2 / 4 / 8 (full page, reserved)");
                                    valid_mode = 0;
                                end else begin
                                    m_bl = 4'd1 << a[1:0];
                                end
                                cl_code = a[6:4];
                                if (cl_code != 3'd2 && cl_code != 3'd3) begin
                                    flag_msg(R_MODE, -1, "CAS latency code not 2 or 3");
                                    valid_mode = 0;
                                end else begin
                                    m_cl = cl_code[1:0];
                                    if (cl_code == 3'd2 && TCK_PS < TCK_CL2_PS)
                                        flag_msg(R_TCK, -1, "TCK_PS below tCK min at CL 2 (TCK_CL2_PS)");
                                    if (cl_code == 3'd3 && TCK_PS < TCK_CL3_PS)
                                        flag_msg(R_TCK, -1, "TCK_PS below tCK min at CL 3 (TCK_CL3_PS)");
                                end
                                m_inter = a[3];
                                m_single = a[9];
                                if (a[8:7] != 2'b00) begin
                                    warn("LOAD MODE REGISTER with reserved operating mode M8:M7 != 00: READ / WRITE refused");
                                    valid_mode = 0;
                                end
                                if (a[12:10] != 3'b000) warn("LOAD MODE REGISTER with A12:A10 != 0");
                                if (ba != 2'b00) warn("LOAD MODE REGISTER with BA != 0");
                                m_valid = valid_mode;
                                last_mrs = k;
                                if (!init_done) init_mrs = init_mrs + 1;
                            end
                            C_BST: begin
                                n_kind = T_STOP;
                                n_mask = 4'hf;
                                wb_active = 0;
                            end
                            default: ;
                        endcase
                        if (!init_done && init_refs >= 2 && init_mrs >= 1) init_done = 1;
                    end
                end
            end
        end

        // the write beat at this edge
        if (wb_active) begin
            busy = 1;
            idx = index(wb_bank, wb_row, burst_col(wb_col, wb_i, wb_bl, wb_inter));
            wd = wb_ok ? dq : 16'hxxxx;
            if ({19'd0, wb_row} < ROWS) begin
                if (dm[0] === 1'b0) mem[idx][7:0] = wd[7:0];
                else if (dm[0] !== 1'b1) mem[idx][7:0] = 8'hxx;
                if (dm[1] === 1'b0) mem[idx][15:8] = wd[15:8];
                else if (dm[1] !== 1'b1) mem[idx][15:8] = 8'hxx;
            end
            b_wr[wb_bank] = k;
            wb_i = wb_i + 1;
            if (wb_i == wb_bl) wb_active = 0;
        end
        if (busy) data_cycles = data_cycles + 1;

        // the read beat due at the next edge
        if ((m_cl == 2'd3 ? t2_kind : t1_kind) == T_READ) begin
            rb_active = 1;
            if (m_cl == 2'd3) begin
                rb_bank = t2_bank; rb_row = t2_row; rb_col = t2_col; rb_bl = t2_bl;
                rb_inter = t2_inter; rb_ok = t2_ok;
            end else begin
                rb_bank = t1_bank; rb_row = t1_row; rb_col = t1_col; rb_bl = t1_bl;
                rb_inter = t1_inter; rb_ok = t1_ok;
            end
            rb_i = 0;
        end else if ((m_cl == 2'd3 ? t2_kind : t1_kind) == T_STOP) begin
            if (rb_active && (m_cl == 2'd3 ? t2_mask[rb_bank] : t1_mask[rb_bank])) rb_active = 0;
        end
        if (m_cl == 2'd3) t2_kind = T_NONE;
        else t1_kind = T_NONE;
        if (rb_active) begin
            idx = index(rb_bank, rb_row, burst_col(rb_col, rb_i, rb_bl, rb_inter));
            rd_q <= rb_ok ? mem[idx] : 16'hxxxx;
            rd_oe <= 1'b1;
            rb_i = rb_i + 1;
            if (rb_i == rb_bl) rb_active = 0;
        end else begin
            rd_oe <= 1'b0;
        end

        // the command of this edge enters the read pipeline
        t2_kind = t1_kind; t2_bank = t1_bank; t2_row = t1_row; t2_col = t1_col;
        t2_bl = t1_bl; t2_inter = t1_inter; t2_ok = t1_ok; t2_mask = t1_mask;
        t1_kind = n_kind; t1_bank = n_bank; t1_row = n_row; t1_col = n_col;
        t1_bl = n_bl; t1_inter = n_inter; t1_ok = n_ok; t1_mask = n_mask;

        cycles = cycles + 1;
      end
    end
endmodule

/* verilator lint_off DECLFILENAME */
// (both modules live in this one file)

// The chip with dq split as the controller side sees it (see the header): the controller
// drives dq_o while dq_oe is high (one enable for all 16 bits); dq_i is the bus it reads.
module mt48lc16m16a2_split #(
    parameter integer TCK_PS = 20000,
    parameter integer ROWS = 8192,
    parameter integer FATAL = 0,
    parameter integer POWERUP_PS = 100_000_000,
    parameter integer TREFI_PS = 7_812_500,
    parameter integer TRP_PS = 20_000,
    parameter integer TRCD_PS = 20_000,
    parameter integer TRAS_PS = 44_000,
    parameter integer TRAS_MAX_PS = 120_000_000,
    parameter integer TRC_PS = 66_000,
    parameter integer TRRD_PS = 15_000,
    parameter integer TRFC_PS = 66_000,
    parameter integer TWR_PS = 15_000,
    parameter integer TWR_AP_PS = 7_500,
    parameter integer TMRD_CK = 2,
    parameter integer TCK_CL2_PS = 10_000,
    parameter integer TCK_CL3_PS = 7_500
) (
    input clk,
    input cke,
    input cs_n,
    input ras_n,
    input cas_n,
    input we_n,
    input [1:0] ba,
    input [12:0] a,
    input [1:0] dm,
    input [15:0] dq_o,
    input dq_oe,
    output [15:0] dq_i
);
    wire [15:0] dq;
    assign dq = dq_oe ? dq_o : 16'bz;
    assign dq_i = dq;

    mt48lc16m16a2 #(
        .TCK_PS(TCK_PS), .ROWS(ROWS), .FATAL(FATAL), .POWERUP_PS(POWERUP_PS),
        .TREFI_PS(TREFI_PS), .TRP_PS(TRP_PS), .TRCD_PS(TRCD_PS), .TRAS_PS(TRAS_PS),
        .TRAS_MAX_PS(TRAS_MAX_PS), .TRC_PS(TRC_PS), .TRRD_PS(TRRD_PS), .TRFC_PS(TRFC_PS),
        .TWR_PS(TWR_PS), .TWR_AP_PS(TWR_AP_PS), .TMRD_CK(TMRD_CK), .TCK_CL2_PS(TCK_CL2_PS),
        .TCK_CL3_PS(TCK_CL3_PS)
    ) chip (
        .clk(clk), .cke(cke), .cs_n(cs_n), .ras_n(ras_n), .cas_n(cas_n), .we_n(we_n),
        .ba(ba), .a(a), .dm(dm), .dq(dq), .ctl_oe(dq_oe)
    );
endmodule
