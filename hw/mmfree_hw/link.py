"""The framed link in gateware: frames of ``mmfree_fpga.link.protocol`` from a UART in, whole
checked commands to the command processor, its replies back out in frames.

The frame format, the NAK reasons and the device's behaviour are specified in
``mmfree_fpga.link.protocol`` (its docstring; ``protocol.DeviceFramer`` is the same behaviour
in Python); this module implements them and imports every constant from there.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import crc, memory, stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from mmfree_fpga.link import protocol as P


class FrameLink(wiring.Component):
    """Deframer, executor and framer between a byte link and ``command.CommandProcessor``.

    Parameters (all checked): ``max_payload`` (MAX_CMD_PAYLOAD: the frame buffer's size, and
    the largest CMD len accepted), ``max_chunk`` (MAX_REPLY_CHUNK: reply data bytes per
    frame), ``rx_timeout`` (cycles without a byte after which a frame in progress is refused
    TRUNCATED), ``heartbeat`` (while a command runs, a reply frame, possibly empty, goes out
    at least every ``heartbeat`` cycles after the previous one started), ``reply_depth``
    (bytes of reply FIFO, at least ``max_chunk``; default 2 x ``max_chunk``, so the
    processor keeps producing while a full chunk goes out).

    Ports (``lib.stream``: a beat transfers at an edge where valid and ready are high):

    - ``rx``: In stream, 8 bits, from a UART receiver. ``rx.ready`` is always high (a UART
      has no flow control): a byte is taken in every cycle it is valid.
    - ``tx``: Out stream, 8 bits, to a UART transmitter: NAK and reply frames.
    - ``cmd_out``: Out stream, 8 bits, to the processor's ``cmd_in``: the payloads of
      accepted CMD frames only, each whole, one after another.
    - ``reply_in``: In stream, 8 bits, from the processor's ``cmd_out``: reply bytes.
    - ``cmd_busy``: In, the processor's ``busy``: low exactly when it waits for its next
      command byte with no reply byte pending. It must be high in the cycle after the edge
      that took a command's last byte unless the reply is then complete (the
      CommandProcessor's ``busy`` is combinational from its state: it is).
    - ``busy``: Out, low exactly when the link (and the processor) can do nothing until
      ``rx`` brings a byte: the receiver hunts for a frame, no command waits or runs, no NAK
      or frame is to be sent, and ``cmd_busy`` is low. A simulation harness with no input
      left may stop clocking while ``busy`` is low (the rx timeout only runs inside a frame).

    Latency and throughput (tests/test_link_amaranth.py asserts them): the receiver takes a
    byte per cycle; a command's first byte is on ``cmd_out`` 4 cycles after the edge that
    took its frame's last CRC byte, then a byte per cycle (as the processor takes them);
    the reply's last frame starts on ``tx`` 4 cycles after the processor's last reply byte
    went into the FIFO; a frame goes out at a byte per cycle (as ``tx`` takes them) but for
    one idle cycle before its CRC (the CRC takes each byte as it leaves the output
    register) and one between frames. A NAK starts on ``tx`` 3 cycles after the edge that
    took the byte that decided it (the header's last byte, or the last CRC byte), unless a
    reply is in progress (then after its REPLY_END). Per frame 10 bytes of framing, plus 2
    of index in a reply frame: a WRITE of 2038 data bytes is a 2058-byte frame (99.0 %).
    ``cmd_out`` and ``tx`` leave flip-flops (the frame buffer's and the reply FIFO's block
    RAM outputs are registered before them).

    Resources: the frame buffer, ``max_payload`` x 8 bits of block RAM (2048: one DP16KD),
    the reply FIFO (``reply_depth`` - 1 bytes of block RAM and an output register:
    ``lib.fifo.SyncFIFOBuffered``), two byte-wide CRC-32 units (``lib.crc.Processor``), a
    10-byte header shift register, the output registers, counters for the payload, the
    timeout and the heartbeat, and three small state machines. With the defaults, ECP5
    (Yosys 0.70 ``synth_ecp5``): 944 LUT4, 91 CCU2C, 463 FF, 2 DP16KD; nextpnr-ecp5 out of
    context on the 85F, speed 6: 109-112 MHz (an upper bound; before the output registers
    the reply FIFO's RAM fed the CRC directly: 72-80 MHz).
    """

    def __init__(self, *, max_payload: int = P.MAX_CMD_PAYLOAD,
                 max_chunk: int = P.MAX_REPLY_CHUNK, rx_timeout: int = P.DEFAULT_RX_TIMEOUT,
                 heartbeat: int = P.DEFAULT_HEARTBEAT, reply_depth: int | None = None):
        try:
            self._check(max_payload, max_chunk, rx_timeout, heartbeat, reply_depth)
        except ValueError:
            self._MustUse__silence = True       # a refused one is not an unused one
            raise
        reply_depth = 2 * max_chunk if reply_depth is None else reply_depth
        self.max_payload, self.max_chunk = max_payload, max_chunk
        self.rx_timeout, self.heartbeat, self.reply_depth = rx_timeout, heartbeat, reply_depth
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "cmd_out": Out(stream.Signature(8)),
            "reply_in": In(stream.Signature(8)),
            "cmd_busy": In(1),
            "busy": Out(1),
        })

    @staticmethod
    def _check(max_payload, max_chunk, rx_timeout, heartbeat, reply_depth):
        if not 1 <= max_payload <= 0xFFFF:
            raise ValueError(f"max_payload must be 1 .. 65535, not {max_payload}")
        if not 1 <= max_chunk <= 0xFFFF - P.REPLY_INDEX.size:
            raise ValueError(f"max_chunk must be 1 .. {0xFFFF - P.REPLY_INDEX.size}")
        if rx_timeout < 1 or heartbeat < 1:
            raise ValueError("rx_timeout and heartbeat must be >= 1 cycle")
        reply_depth = 2 * max_chunk if reply_depth is None else reply_depth
        if reply_depth < max(max_chunk, 2):
            raise ValueError(f"reply_depth ({reply_depth}) must be >= max_chunk "
                             f"({max_chunk}) and >= 2: a full chunk must fit")

    def elaborate(self, platform):
        m = Module()
        maxp, chunk = self.max_payload, self.max_chunk
        params = getattr(catalog, P.CRC_ALGORITHM)(8)
        m.submodules.rx_crc = rx_crc = crc.Processor(params)
        m.submodules.tx_crc = tx_crc = crc.Processor(params)
        m.submodules.buf = buf = memory.Memory(shape=8, depth=maxp, init=[])
        wp = buf.write_port()
        rp = buf.read_port()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=8, depth=self.reply_depth)

        # -- state shared by the three machines -------------------------------------------
        buf_full = Signal()              # an accepted command waits or is being forwarded
        cmd_len = Signal(range(maxp + 1))
        cmd_seq = Signal(8)
        last_seq = Signal(8)             # the last accepted command's seq ...
        last_valid = Signal()            # ... if any since reset
        active = Signal()                # a command's reply is in progress
        complete = Signal()              # ... and the processor has finished it
        reply_seq = Signal(8)
        nak_pending = Signal()
        nak_reason = Signal(8)
        nak_seq = Signal(8)
        nak_set = Signal()               # the receiver refuses a frame this cycle
        nak_set_reason = Signal(8)
        nak_take = Signal()              # the framer starts the pending NAK this cycle
        chunk_idx = Signal(16)
        exec_start = Signal()

        # -- receiver ---------------------------------------------------------------------
        rx = self.rx
        byte, got = rx.payload, rx.valid
        m.d.comb += [rx.ready.eq(1), rx_crc.data.eq(byte)]
        r_ver, r_type, r_seq, r_len_lo = Signal(8), Signal(8), Signal(8), Signal(8)
        r_len = Signal(range(maxp + 1))
        r_idx = Signal(range(max(maxp, 5)))
        r_crc = Signal(24)
        store = Signal()                 # the payload goes into the buffer
        quiet = Signal(range(self.rx_timeout + 1))
        rx_hunting = Signal()

        def timeout():
            """Inside a frame: a byte at least every rx_timeout cycles, or TRUNCATED."""
            with m.If(got):
                m.d.sync += quiet.eq(0)
            with m.Elif(quiet == self.rx_timeout - 1):
                m.d.comb += [nak_set.eq(1), nak_set_reason.eq(P.Nak.TRUNCATED)]
                m.next = "HUNT"
            with m.Else():
                m.d.sync += quiet.eq(quiet + 1)

        with m.FSM(name="rx"):
            with m.State("HUNT"):
                m.d.comb += rx_hunting.eq(1)
                with m.If(got & (byte == P.SOF)):
                    m.d.comb += rx_crc.start.eq(1)
                    m.d.sync += [r_idx.eq(0), r_seq.eq(0), quiet.eq(0)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                timeout()
                with m.If(got):
                    m.d.comb += rx_crc.valid.eq(1)
                    m.d.sync += r_idx.eq(r_idx + 1)
                    with m.Switch(r_idx):
                        with m.Case(0):
                            m.d.sync += r_ver.eq(byte)
                        with m.Case(1):
                            m.d.sync += r_type.eq(byte)
                        with m.Case(2):
                            m.d.sync += r_seq.eq(byte)
                        with m.Case(3):
                            m.d.sync += r_len_lo.eq(byte)
                        with m.Case(4):
                            n = Cat(r_len_lo, byte)
                            with m.If(r_ver != P.PROTOCOL_VERSION):
                                m.d.comb += [nak_set.eq(1), nak_set_reason.eq(P.Nak.VERSION)]
                                m.next = "HUNT"
                            with m.Elif((n == 0) | (n > maxp)):
                                m.d.comb += [nak_set.eq(1),
                                             nak_set_reason.eq(P.Nak.BAD_LENGTH)]
                                m.next = "HUNT"
                            with m.Else():
                                m.d.sync += [r_len.eq(n), r_idx.eq(0), store.eq(~buf_full)]
                                m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                timeout()
                m.d.comb += [wp.addr.eq(r_idx), wp.data.eq(byte), wp.en.eq(got & store)]
                with m.If(got):
                    m.d.comb += rx_crc.valid.eq(1)
                    m.d.sync += r_idx.eq(r_idx + 1)
                    with m.If(r_idx == r_len - 1):
                        m.d.sync += r_idx.eq(0)
                        m.next = "CRC"
            with m.State("CRC"):
                timeout()
                with m.If(got):
                    m.d.sync += [r_crc.eq(Cat(r_crc[8:], byte)), r_idx.eq(r_idx + 1)]
                    with m.If(r_idx == P.CRC_BYTES - 1):
                        m.next = "HUNT"
                        with m.If(Cat(r_crc, byte) != rx_crc.crc):
                            m.d.comb += [nak_set.eq(1), nak_set_reason.eq(P.Nak.BAD_CRC)]
                        with m.Elif(r_type != P.FrameType.CMD):
                            m.d.comb += [nak_set.eq(1), nak_set_reason.eq(P.Nak.BAD_TYPE)]
                        with m.Elif(last_valid & (r_seq == last_seq)):
                            m.d.comb += [nak_set.eq(1), nak_set_reason.eq(P.Nak.REPEAT)]
                        with m.Elif(~store):
                            m.d.comb += [nak_set.eq(1), nak_set_reason.eq(P.Nak.BUSY)]
                        with m.Else():
                            m.d.sync += [buf_full.eq(1), cmd_len.eq(r_len), cmd_seq.eq(r_seq),
                                         last_seq.eq(r_seq), last_valid.eq(1)]

        with m.If(nak_set):
            m.d.sync += [nak_pending.eq(1), nak_reason.eq(nak_set_reason), nak_seq.eq(r_seq)]
        with m.Elif(nak_take):
            m.d.sync += nak_pending.eq(0)

        # -- executor: the buffer to cmd_out, then wait for the reply to be complete --------
        # Two stages: the block RAM's read (data held while its port is not enabled), then
        # the output register, so cmd_out's payload leaves a flip-flop, not the RAM.
        out = self.cmd_out
        rd_addr = Signal(range(maxp))
        rd_left = Signal(range(maxp + 1))
        rd_valid = Signal()              # rp.data holds a byte not yet in the register
        out_valid = Signal()
        out_byte = Signal(8)
        m.d.comb += [out.valid.eq(out_valid), out.payload.eq(out_byte), rp.addr.eq(rd_addr)]
        with m.FSM(name="exec"):
            with m.State("IDLE"):
                with m.If(buf_full & ~active):
                    m.d.comb += exec_start.eq(1)
                    m.d.sync += [active.eq(1), complete.eq(0), reply_seq.eq(cmd_seq),
                                 rd_addr.eq(0), rd_left.eq(cmd_len)]
                    m.next = "FORWARD"
            with m.State("FORWARD"):
                move = rd_valid & (~out_valid | out.ready)
                fetch = (rd_left != 0) & (~rd_valid | move)
                m.d.comb += rp.en.eq(fetch)
                with m.If(fetch):
                    m.d.sync += [rd_addr.eq(rd_addr + 1), rd_left.eq(rd_left - 1),
                                 rd_valid.eq(1)]
                with m.Elif(move):
                    m.d.sync += rd_valid.eq(0)
                with m.If(move):
                    m.d.sync += [out_byte.eq(rp.data), out_valid.eq(1)]
                with m.Elif(out.ready):
                    m.d.sync += out_valid.eq(0)
                with m.If(out_valid & out.ready & ~rd_valid & (rd_left == 0)):
                    m.d.sync += buf_full.eq(0)
                    m.next = "WAIT"
            with m.State("WAIT"):       # the cycle after the last byte's edge and later
                with m.If(~self.cmd_busy):
                    m.d.sync += complete.eq(1)
                    m.next = "IDLE"

        reply = self.reply_in
        m.d.comb += [fifo.w_data.eq(reply.payload), fifo.w_en.eq(reply.valid),
                     reply.ready.eq(fifo.w_rdy)]

        # -- framer -------------------------------------------------------------------------
        tx = self.tx
        hdr = Signal(8 * (P.HEADER_BYTES + P.NAK_PAYLOAD.size))
        hdr_left = Signal(range(len(hdr) // 8 + 1))
        data_left = Signal(range(chunk + 1))
        crc_idx = Signal(2)
        sof_phase = Signal()
        hb = Signal(range(self.heartbeat + 1))
        level = fifo.level
        send_end = active & complete & (level <= chunk)
        send_full = active & (level >= chunk)
        send_beat = active & (hb == self.heartbeat)
        n_send = Signal(range(chunk + 1))
        m.d.comb += n_send.eq(Mux(level >= chunk, chunk, level))

        def header(ftype, seq, length, extra):
            """A frame's first bytes: ``ftype``, ``seq`` 8 bits, ``length`` 16 bits."""
            assert len(ftype) == 8 and len(seq) == 8 and len(length) == 16
            return Cat(Const(P.SOF, 8), Const(P.PROTOCOL_VERSION, 8), ftype, seq, length,
                       extra)

        with m.If(exec_start):
            m.d.sync += [chunk_idx.eq(0), hb.eq(0)]
        with m.Elif(active & (hb != self.heartbeat)):
            m.d.sync += hb.eq(hb + 1)

        # The frame's bytes go through an output register (tx leaves a flip-flop); the CRC
        # takes each covered byte as it leaves, so its CRC bytes wait for the last one.
        ob, ob_valid, ob_covered = Signal(8), Signal(), Signal()
        ob_free = ~ob_valid | tx.ready
        m.d.comb += [tx.valid.eq(ob_valid), tx.payload.eq(ob),
                     tx_crc.data.eq(ob), tx_crc.valid.eq(tx.valid & tx.ready & ob_covered)]
        with m.If(tx.ready):
            m.d.sync += ob_valid.eq(0)

        def emit(value, covered):
            return [ob.eq(value), ob_valid.eq(1), ob_covered.eq(covered)]

        with m.FSM(name="tx") as tx_fsm:
            with m.State("IDLE"):
                with m.If(send_end | send_full | send_beat):
                    ftype, length = Signal(8), Signal(16)
                    m.d.comb += [tx_crc.start.eq(1),
                                 ftype.eq(Mux(send_end, P.FrameType.REPLY_END,
                                              P.FrameType.REPLY)),
                                 length.eq(n_send + P.REPLY_INDEX.size)]
                    m.d.sync += [
                        hdr.eq(header(ftype, reply_seq, length, chunk_idx)),
                        hdr_left.eq(P.HEADER_BYTES + P.REPLY_INDEX.size),
                        data_left.eq(n_send), sof_phase.eq(1), hb.eq(0),
                        chunk_idx.eq(chunk_idx + (n_send != 0)),
                    ]
                    with m.If(send_end):
                        m.d.sync += active.eq(0)
                    m.next = "HEADER"
                with m.Elif(nak_pending & ~active):
                    m.d.comb += [tx_crc.start.eq(1), nak_take.eq(1)]
                    m.d.sync += [
                        hdr.eq(header(Const(P.FrameType.NAK, 8), nak_seq,
                                      Const(P.NAK_PAYLOAD.size, 16),
                                      Cat(nak_reason, Const(P.PROTOCOL_VERSION, 8),
                                          Const(maxp, 16)))),
                        hdr_left.eq(P.HEADER_BYTES + P.NAK_PAYLOAD.size),
                        data_left.eq(0), sof_phase.eq(1),
                    ]
                    m.next = "HEADER"
            with m.State("HEADER"):
                with m.If(ob_free):
                    m.d.sync += [*emit(hdr[:8], ~sof_phase), hdr.eq(hdr >> 8),
                                 hdr_left.eq(hdr_left - 1), sof_phase.eq(0)]
                    with m.If(hdr_left == 1):
                        m.d.sync += crc_idx.eq(0)
                        with m.If(data_left != 0):
                            m.next = "DATA"
                        with m.Else():
                            m.next = "CRC"
            with m.State("DATA"):
                take = ob_free & fifo.r_rdy
                m.d.comb += fifo.r_en.eq(take)
                with m.If(take):
                    m.d.sync += [*emit(fifo.r_data, 1), data_left.eq(data_left - 1)]
                    with m.If(data_left == 1):
                        m.next = "CRC"
            with m.State("CRC"):
                with m.If(ob_free & ~(ob_valid & ob_covered)):   # the last byte is in
                    m.d.sync += [*emit(tx_crc.crc.word_select(crc_idx, 8), 0),
                                 crc_idx.eq(crc_idx + 1)]
                    with m.If(crc_idx == P.CRC_BYTES - 1):
                        m.next = "IDLE"

        m.d.comb += self.busy.eq(~rx_hunting | buf_full | active | nak_pending
                                 | ~tx_fsm.ongoing("IDLE") | ob_valid | self.cmd_busy)
        return m
