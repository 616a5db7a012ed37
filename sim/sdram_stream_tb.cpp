// sdram_stream_tb.cpp: the Verilator harness of sim/sdram_stream_tb.v (SdramController +
// the MT48LC16M16A2 chip model). It plays a trace of native-port operations as fast as the
// controller takes them and logs what happened; sim/sdram_stream_tb.py writes the trace and
// checks the log.
//
//   sdram_stream_tb TRACE OUT [dq_flip] [max_cycles] [tail] [wdata_mode]
//
// TRACE (text): one operation a line:
//   W addr data mask   a write (mask: byte enables, 1 = write the byte)
//   R addr             a read
//   P n                pause: the next operation waits until every read issued so far has
//                      returned and n cycles have passed since the last acceptance
// All numbers are hex. The command stream presents the next operation every cycle (from
// reset on; cmd.ready is low until init_done); the wdata stream presents the data of the
// writes in trace order: wdata_mode 0 (default) independently of the commands (as early as
// possible), 1 only from the cycle after its command was accepted (as SdramWeightStore
// does), 2 never (the controller's wdata_underrun check). rdata is always accepted.
//
// OUT (text):
//   init E done error           the edge at which init_done or init_error first was 1
//   acc i E                     operation i's command was accepted at edge E
//   rd E data                   a read beat was valid in the cycle ending at edge E
//   snap LABEL E violations rules cycles data_cycles activates refreshes
//                               the chip model's counters before edge E: at "init", at each
//                               change between writes and reads ("phase<i>": operation i is
//                               the first of the new kind, E the edge accepting it), at the
//                               last read beat ("rd_last") and at the end ("end")
//   end E accepted beats underrun
//                               the run stopped before edge E; the controller's
//                               wdata_underrun then
// Edge E: the (E+1)th rising edge of clk from power on (edge 0 = the first), the chip
// model's `cycles` numbering. A command accepted at edge E whose data is on rdata in the
// cycle ending at edge E + L has latency L.
//
// The run ends `tail` cycles after the last operation is accepted and its reads returned
// (or after init when the trace is empty, or after init_error), or at max_cycles.

#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <memory>
#include <vector>

#include "Vsdram_stream_tb.h"
#include "verilated.h"
#ifdef WAVES
#include "verilated_vcd_c.h"
#endif

struct Op {
    char kind;
    uint32_t addr, data, mask;
};

static void snap(FILE* out, const char* label, uint64_t edge, Vsdram_stream_tb* t) {
    fprintf(out, "snap %s %llu %u %u %llu %llu %llu %llu\n", label, (unsigned long long)edge,
            (unsigned)t->chip_violations, (unsigned)t->chip_rules,
            (unsigned long long)t->chip_cycles, (unsigned long long)t->chip_data_cycles,
            (unsigned long long)t->chip_activates, (unsigned long long)t->chip_refreshes);
}

int main(int argc, char** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TRACE OUT [dq_flip] [max_cycles] [tail]\n", argv[0]);
        return 2;
    }
    uint32_t dq_flip = argc > 3 ? strtoul(argv[3], nullptr, 16) : 0;
    uint64_t max_cycles = argc > 4 ? strtoull(argv[4], nullptr, 10) : 20000000ull;
    uint64_t tail = argc > 5 ? strtoull(argv[5], nullptr, 10) : 200;
    int wdata_mode = argc > 6 ? atoi(argv[6]) : 0;

    std::vector<Op> ops;
    std::vector<size_t> writes;                // indices of the W ops, in order
    uint64_t n_reads = 0;
    FILE* in = fopen(argv[1], "r");
    if (!in) { perror(argv[1]); return 2; }
    char kind;
    while (fscanf(in, " %c", &kind) == 1) {
        Op op{kind, 0, 0, 0};
        int ok = 1;
        if (kind == 'W') ok = fscanf(in, "%x %x %x", &op.addr, &op.data, &op.mask) == 3;
        else if (kind == 'R') { ok = fscanf(in, "%x", &op.addr) == 1; n_reads++; }
        else if (kind == 'P') ok = fscanf(in, "%x", &op.addr) == 1;
        else ok = 0;
        if (!ok) { fprintf(stderr, "bad trace line at op %zu\n", ops.size()); return 2; }
        if (kind == 'W') writes.push_back(ops.size());
        ops.push_back(op);
    }
    fclose(in);
    FILE* out = fopen(argv[2], "w");
    if (!out) { perror(argv[2]); return 2; }

    auto ctx = std::make_unique<VerilatedContext>();
    auto t = std::make_unique<Vsdram_stream_tb>(ctx.get());
#ifdef WAVES
    // built with waves=True: every signal to $SDRAM_TB_VCD (default waves.vcd)
    Verilated::traceEverOn(true);
    auto vcd = std::make_unique<VerilatedVcdC>();
    t->trace(vcd.get(), 99);
    vcd->open(getenv("SDRAM_TB_VCD") ? getenv("SDRAM_TB_VCD") : "waves.vcd");
#endif
    t->dq_flip = dq_flip;
    t->rst = 1;
    t->clk = 0;

    size_t pc = 0, wd = 0;                     // next op; next write's data
    uint64_t reads_acc = 0, beats = 0, writes_acc = 0;
    uint64_t last_acc = 0, wait_until = 0, done_at = 0;
    bool pausing = false, init_seen = false, finished = false;
    int last_kind = 0;
    bool init_error = false;
    uint64_t edge = 0;

    auto present = [&]() {
        // skip pauses that are over
        while (pc < ops.size() && ops[pc].kind == 'P') {
            if (!pausing) { pausing = true; wait_until = last_acc + ops[pc].addr; }
            if (reads_acc == beats && edge >= wait_until) { pausing = false; pc++; }
            else break;
        }
        bool v = pc < ops.size() && ops[pc].kind != 'P';
        t->cmd_valid = v;
        t->cmd_we = v && ops[pc].kind == 'W';
        t->cmd_addr = v ? ops[pc].addr : 0;
        bool wv = wd < writes.size() && (wdata_mode == 0 || (wdata_mode == 1 && wd < writes_acc));
        t->wdata_valid = wv;
        t->wdata_data = wv ? ops[writes[wd]].data : 0;
        t->wdata_we = wv ? ops[writes[wd]].mask : 0;
    };

    for (; edge < max_cycles; edge++) {
        if (edge == 4) t->rst = 0;
        present();
        t->clk = 0;
        t->eval();
#ifdef WAVES
        vcd->dump(2 * edge);
#endif
        // sample the cycle ending at this edge
        bool cmd_fire = t->cmd_valid && t->cmd_ready;
        bool wd_fire = t->wdata_valid && t->wdata_ready;
        bool rd = t->rdata_valid;
        uint32_t rdd = t->rdata_data;
        if (!init_seen && (t->init_done || t->init_error)) {
            init_seen = true;
            init_error = t->init_error;
            fprintf(out, "init %llu %u %u\n", (unsigned long long)edge, (unsigned)t->init_done,
                    (unsigned)t->init_error);
            snap(out, "init", edge, t.get());
        }
        if (cmd_fire) {
            int k = ops[pc].kind;
            if (last_kind && k != last_kind) {
                char label[32];
                snprintf(label, sizeof label, "phase%zu", pc);
                snap(out, label, edge, t.get());
            }
            last_kind = k;
            fprintf(out, "acc %zu %llu\n", pc, (unsigned long long)edge);
            if (k == 'R') reads_acc++;
            if (k == 'W') writes_acc++;
            last_acc = edge;
            pc++;
        }
        if (wd_fire) wd++;
        if (rd) {
            fprintf(out, "rd %llu %x\n", (unsigned long long)edge, rdd);
            beats++;
            if (beats == n_reads) snap(out, "rd_last", edge, t.get());
        }
        t->clk = 1;
        t->eval();
#ifdef WAVES
        vcd->dump(2 * edge + 1);
#endif
        ctx->timeInc(1);
        if (!finished) {
            bool all = init_seen && pc >= ops.size() && beats >= reads_acc;
            if (all || init_error) { finished = true; done_at = edge; }
        } else if (edge >= done_at + tail) {
            edge++;
            break;
        }
    }
    t->clk = 0;
    t->eval();
    snap(out, "end", edge, t.get());
    fprintf(out, "end %llu %zu %llu %u\n", (unsigned long long)edge, pc,
            (unsigned long long)beats, (unsigned)t->wdata_underrun);
    fclose(out);
#ifdef WAVES
    vcd->close();
#endif
    t->final();
    return 0;
}
