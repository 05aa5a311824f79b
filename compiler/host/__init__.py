"""The host side of a board: the serial port, the framed link (:mod:`hdl.protocol`) and the driver that
loads inputs, starts inferences and reads results over the accelerator's host bus."""
