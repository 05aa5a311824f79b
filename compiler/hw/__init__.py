"""Mapping the integer IR onto hardware: the hardware plan (lanes, buffers, stages, model id) that the HDL
generator reads, and the pre-synthesis estimate of its resources and cycles, summed from the costs that
the cores state themselves (:mod:`hdl.cost`)."""
