// The simulated accelerator's byte-stream harness (Verilator).
//
// The model (class Vtop) is build.py's wrapper around a top whose ports are exactly clk,
// rst, cmd_in__{valid,ready,payload}, cmd_out__{valid,ready,payload} and busy, renamed
// in_{valid,ready,data}, out_{valid,ready,data} and busy (Verilator mangles "__").
// The harness is dumb on purpose: bytes in, bytes out, no protocol of its own.
//
//   stdin  -> cmd_in   one byte per cycle while the core takes them (read in chunks)
//   cmd_out -> stdout  collected into a buffer, cmd_out.ready always high
//
// It resets the core, then clocks it. When it has no input byte left, busy is low and
// cmd_out is not valid, the core can do nothing until the host speaks: the harness
// flushes stdout and blocks on stdin (so an idle simulator costs no CPU). EOF on stdin
// ends it (exit 0), after the output is flushed. A closed stdout ends it too (exit 0).
//
// Compiled with -DWAVES (build.py's waves=True, or WAVES=1), it traces every signal to
// the VCD file WAVES_FILE (or argv[1]).

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <unistd.h>

#include "Vtop.h"
#include "verilated.h"
#ifdef WAVES
#include "verilated_vcd_c.h"
#endif

namespace {

constexpr size_t kChunk = 1 << 16;
uint8_t in_buf[kChunk];
uint8_t out_buf[kChunk];
size_t in_pos = 0, in_len = 0, out_len = 0;

// Write the whole output buffer; false if stdout is gone.
bool flush_out() {
    size_t done = 0;
    while (done < out_len) {
        ssize_t n = write(STDOUT_FILENO, out_buf + done, out_len - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        done += static_cast<size_t>(n);
    }
    out_len = 0;
    return true;
}

// Block until input arrives; false on EOF (or a read error).
bool fill_in() {
    for (;;) {
        ssize_t n = read(STDIN_FILENO, in_buf, kChunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        in_pos = 0;
        in_len = static_cast<size_t>(n);
        return true;
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    auto ctx = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vtop>(ctx.get());
#ifdef WAVES
    ctx->traceEverOn(true);
    auto tfp = std::make_unique<VerilatedVcdC>();
    top->trace(tfp.get(), 99);
    tfp->open(argc > 1 ? argv[1] : WAVES_FILE);
    uint64_t t = 0;
#define DUMP() tfp->dump(t++)
#else
    (void)argc;
    (void)argv;
#define DUMP() ((void)0)
#endif

    top->clk = 0;
    top->rst = 1;
    top->in_valid = 0;
    top->in_data = 0;
    top->out_ready = 1;
    top->eval();
    for (int i = 0; i < 4; i++) {
        top->clk = 1; top->eval(); DUMP();
        top->clk = 0; top->eval(); DUMP();
    }
    top->rst = 0;

    int rc = 0;
    for (;;) {
        bool have = in_pos < in_len;
        top->in_valid = have;
        top->in_data = have ? in_buf[in_pos] : 0;
        top->eval();
        if (!have && !top->busy && !top->out_valid) {
            if (!flush_out()) break;
            if (!fill_in()) break;
            continue;
        }
        if (have && top->in_ready) in_pos++;
        if (top->out_valid) {
            out_buf[out_len++] = top->out_data;
            if (out_len == kChunk && !flush_out()) break;
        }
        DUMP();
        top->clk = 1;
        top->eval();
        DUMP();
        top->clk = 0;
    }
    flush_out();
    top->final();
#ifdef WAVES
    tfp->close();
#endif
    return rc;
}
