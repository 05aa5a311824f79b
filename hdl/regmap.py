"""The accelerator's host-bus address map (32-bit words; ``hdl.hostbus``), shared by the generated top,
the simulators and the host driver.

The 24-bit word address splits into a region (bits 20..23) and an offset (bits 0..19):

========  ==========================================================================================
region 0  registers (below)
region 1  input pixels, write only: offset = the pixel's address in the plan's input layout
          (``compiler.hw.plan.Plan.input_words``)
region 2  logits, read only: logit ``k`` is the signed 64-bit value of words ``2k`` (low) and ``2k+1``
region 3  debug builds only (``trace=True``): buffer ``b`` of the plan (its index in ``Plan.buffers``), word
          ``w``, chunk ``c`` (32 bits each, lowest first) at offset
          ``b << TRACE_INDEX_SHIFT | (w << chunk_bits) | c``
========  ==========================================================================================
"""

ADDR_WIDTH = 24
REGION_SHIFT = 20
OFFSET_MASK = (1 << REGION_SHIFT) - 1

REGION_REGS, REGION_PIXELS, REGION_LOGITS, REGION_TRACE = 0, 1, 2, 3
TRACE_INDEX_SHIFT = 14  # trace offsets: 64 buffers of up to 16384 32-bit chunks

REG_ID = 0x0            # read: the model identifier (32 bits; compiler.hw.plan.Plan.model_id)
REG_CTRL = 0x1          # write 1: start an inference (ignored while busy); write 2: continue after a pause
REG_STATUS = 0x1        # read: bit 0 busy, bit 1 done (an inference finished since the last start),
                        #       bit 2 paused (trace builds: stopped after a time step, waiting for continue)
REG_CYCLES_LO = 0x2     # cycles from start to done of the last inference (64 bits)
REG_CYCLES_HI = 0x3
REG_EVENTS = 0x4        # spike events consumed by the event-driven cores in the last inference
REG_SYNOPS_LO = 0x5     # synaptic operations (accumulate updates of one synapse) in the last inference
REG_SYNOPS_HI = 0x6
REG_STEP = 0x7          # read: the current time step (trace builds read it while paused)
REG_STAGE = 0x8         # read: the plan stage the controller runs or last ran (a hung inference names it)

STATUS_BUSY, STATUS_DONE, STATUS_PAUSED = 1, 2, 4
CTRL_START, CTRL_CONTINUE = 1, 2


def address(region: int, offset: int = 0) -> int:
    return (region << REGION_SHIFT) | offset


def trace_address(index: int, word: int, chunk: int, chunk_bits: int) -> int:
    """Bus address of a 32-bit chunk of a buffer word in a trace build."""
    inner = (word << chunk_bits) | chunk
    if index >= 1 << (REGION_SHIFT - TRACE_INDEX_SHIFT) or inner >= 1 << TRACE_INDEX_SHIFT:
        raise ValueError(f"buffer {index}, word {word}: outside the trace region")
    return address(REGION_TRACE, index << TRACE_INDEX_SHIFT | inner)
