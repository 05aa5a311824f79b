"""Board descriptions on top of amaranth-boards (ULX3S first), toolchain invocation and flashing."""
