"""The gateware, in Amaranth 0.5: the overlay (``npu``: its instruction set, sequencer and engines, bus and
register map), the SDRAM fetch and LiteDRAM's controller (``sdram``), the UART link (``uart``, ``uart_bridge``,
``protocol``, ``hostbus``) and the ECP5 primitives they use (``ecp5``). Never imports torch or the compiler."""
