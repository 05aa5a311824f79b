"""Simulation harnesses: Amaranth simulator, cocotb with Verilator or Icarus, the simulated host link."""
