"""Spike-driven self-attention datapaths for one time step: ``linear`` (QSD / SDT-V2) and ``sdsa1`` (SDT-V1).

The controller calls a unit once per time step. Every unit is event-driven: it consumes spike events
(:mod:`hdl.events`: ``addr = n * C + c``, a level, ``last`` on the frame's final event; level-0 events are
no-ops) at one event per cycle, so the work of a step grows with the number of spikes, plus one cycle per
output word. The exact arithmetic is ``docs/semantics.md`` (Attention); ``compiler.ir.golden`` is the
reference the tests compare with bit for bit.

Cores
-----
:class:`LinearAttentionUnit`
    ``KV[h, i, j] = sum_n K[n, hd+i] V[n, hd+j]`` and ``A[n, hd+j] = sum_i Q[n, hd+i] KV[h, i, j]``:
    V's events build V's map in memory (one word of ``d`` levels per token and head), K's events add
    ``level * V[n, head]`` (``d`` lanes) into a row of KV, Q's events add ``level * KV[h, i, :]`` into
    the ``d``-lane accumulator of ``A[n, h]``; then ``A`` streams out, one word per (token, head).
:class:`CoSpikeUnit`
    ``C[c] = sum_n K[n, c] V[n, c]``: V's events build V's map (one level per address), K's events add
    ``level_k * V[addr]`` into the count of channel ``c``; then the counts stream out.

Shared structure
----------------
* Every accumulation is a read-add-write on a RAM, one update per cycle: read (three register stages:
  the block RAM's own two and one in the fabric), add, write. Back-to-back updates of one address
  (frequent: the spikes of one token all add into one word of ``A``) take the sums still in flight
  (forwarding), so the pipeline never stalls and never depends on what a RAM returns when one address is
  read and written in the same cycle.
* ``addr -> (token, channel)`` is a slice when ``C`` is a power of two, else a pipelined restoring
  division by the constant (two quotient bits per stage); likewise ``channel -> (head, lane)``.
  Word addresses pad the head index to a power of two (``token << ceil(log2(heads)) | head``): no
  multiplier anywhere. Level times value products are shift-and-add (a mux when ``D`` is a power of
  two), so no MULT18X18D is used.
* Memories are left clean for the next time step during the output sweep, whose length is the dense
  output itself; no step clears a spike map with a pass over every address.
* With ``ecp5`` (the choice shared by every core, :mod:`hdl.ecp5`) the RAMs are DP16KD block RAMs with
  their output registers on (:func:`hdl.ecp5.block_ram`; a block RAM's clock-to-output without it,
  5.8 ns at speed 6 in nextpnr's model, leaves too little of a 150 MHz cycle) or distributed RAM,
  whichever is cheaper; with ``ecp5=False`` they are Amaranth memories with the same three-cycle read, so
  the Amaranth simulator runs the very pipeline that is synthesized (``ecp5="model"`` runs the ECP5
  structure, with behavioural models of the block RAM).
* Every combinational control signal (a port's ``ready``, a RAM port's address, enable and data, a sweep's
  start and stop) is one expression, not an assignment in an FSM state or under an ``If``. The logic is
  the same, but Yosys writes the latter as an ``always @*`` block, which Icarus (``-g2012``, as cocotb runs
  it) first runs when one of its inputs changes: a signal whose inputs keep their initial values is X until
  then. A's read enable, for one, would be X until the first output sweep: its read stages would hold X
  and the first step accumulate X (``tests/test_icarus_attention.py``).
"""

from .cospike import CoSpikeUnit
from .linear import LinearAttentionUnit

__all__ = ["LinearAttentionUnit", "CoSpikeUnit"]
