"""The spiking NPU overlay: one instruction-driven design per board configuration that runs a compiled
program of layer descriptors (:mod:`hdl.npu.isa`)."""
