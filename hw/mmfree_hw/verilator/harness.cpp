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
// MMFREE_HARNESS_CYCLES=path in the environment (opt-in; for measurements in simulated
// time, e.g. tests/test_sim_uart_link.py): the harness truncates path at start and, each
// time it is about to block on stdin (before it flushes stdout, so a host that has its
// answer finds the line written), appends one line: the decimal count of clock cycles
// since reset was released. Deterministic for a given byte stream as long as each of the
// host's messages reaches stdin in one piece (a pipe write of <= PIPE_BUF bytes does).
// The clock loop is a template instantiated with and without the counting, so without
// the variable the harness runs the loop it always ran (measured: the same speed).
//
// Compiled with -DWAVES (build.py's waves=True, or WAVES=1), it traces every signal to
// the VCD file WAVES_FILE (or argv[1]).

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <inttypes.h>
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
int cycles_fd = -1;             // MMFREE_HARNESS_CYCLES's file, if asked for
#ifdef WAVES
VerilatedVcdC* tfp = nullptr;
uint64_t wave_t = 0;
#define DUMP() tfp->dump(wave_t++)
#else
#define DUMP() ((void)0)
#endif

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

// false if MMFREE_HARNESS_CYCLES names a file that cannot be opened
[[gnu::cold, gnu::noinline]] bool open_cycles_log() {
    const char* path = std::getenv("MMFREE_HARNESS_CYCLES");
    if (!path || !*path) return true;
    cycles_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (cycles_fd < 0) {
        perror("MMFREE_HARNESS_CYCLES: open");
        return false;
    }
    return true;
}

[[gnu::cold, gnu::noinline]] void log_cycles(uint64_t cycles) {
    char line[32];
    int n = snprintf(line, sizeof line, "%" PRIu64 "\n", cycles);
    if (write(cycles_fd, line, static_cast<size_t>(n)) != n) {
        perror("MMFREE_HARNESS_CYCLES: write");
        close(cycles_fd);
        cycles_fd = -1;
    }
}

// Clock the model until EOF on stdin or a closed stdout; kCount: count the cycles and
// log them at every wait (MMFREE_HARNESS_CYCLES).
template <bool kCount>
void clock_loop(Vtop* top) {
    [[maybe_unused]] uint64_t cycles = 0;
    for (;;) {
        bool have = in_pos < in_len;
        top->in_valid = have;
        top->in_data = have ? in_buf[in_pos] : 0;
        top->eval();
        if (!have && !top->busy && !top->out_valid) {
            if constexpr (kCount) log_cycles(cycles);
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
        if constexpr (kCount) cycles++;
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    if (!open_cycles_log()) return 2;
    auto ctx = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vtop>(ctx.get());
#ifdef WAVES
    ctx->traceEverOn(true);
    auto vcd = std::make_unique<VerilatedVcdC>();
    tfp = vcd.get();
    top->trace(tfp, 99);
    tfp->open(argc > 1 ? argv[1] : WAVES_FILE);
#else
    (void)argc;
    (void)argv;
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

    if (cycles_fd >= 0) {
        clock_loop<true>(top.get());
    } else {
        clock_loop<false>(top.get());
    }
    flush_out();
    if (cycles_fd >= 0) close(cycles_fd);
    top->final();
#ifdef WAVES
    tfp->close();
#endif
    return 0;
}
