"""External SDR SDRAM: the chips the boards carry (:mod:`.chip`) and the LiteDRAM controller (:mod:`.litedram`)."""
