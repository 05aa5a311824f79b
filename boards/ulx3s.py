"""Radiona ULX3S: 25 MHz oscillator, FTDI FT231X USB UART (``uart`` 0) and JTAG, eight LEDs, 32 MB of SDR SDRAM
(an MT48LC16M16A2 or a compatible part: the overlay's streamed weights, ``hdl.npu.external``).

The resource totals are what nextpnr-ecp5 reports as available for each device. The 12F is the 25F die and
nextpnr gives it the 25F's totals (`prjtrellis#55`_); Lattice's datasheet rates the LFE5U-12F at 12K LUTs,
32 DP16KD and 28 MULT18X18D.

.. _prjtrellis#55: https://github.com/YosysHQ/prjtrellis/issues/55
"""

from amaranth_boards import ulx3s

from hdl.sdram.chip import MT48LC16M16A2

from .spec import BoardSpec, Led

_COMMON = dict(package="BG381", speed=6, clock="clk25", clock_mhz=25.0, uart=("uart", 0),
               leds=tuple(Led("led", n) for n in range(8)), loader_board="ulx3s", sdram=MT48LC16M16A2)

#: (platform, device, LUT4 = FF, DP16KD, MULT18X18D) per variant
_VARIANTS = {
    "12f": (ulx3s.ULX3S_12F_Platform, "LFE5U-12F", 24288, 56, 28),
    "25f": (ulx3s.ULX3S_25F_Platform, "LFE5U-25F", 24288, 56, 28),
    "45f": (ulx3s.ULX3S_45F_Platform, "LFE5U-45F", 43848, 108, 72),
    "85f": (ulx3s.ULX3S_85F_Platform, "LFE5U-85F", 83640, 208, 156),
}

SPECS = tuple(
    BoardSpec(name=f"ulx3s-{variant}", platform=platform, device=device, lut4=luts, ff=luts, dp16kd=brams,
              mult18x18d=mults, **_COMMON)
    for variant, (platform, device, luts, brams, mults) in _VARIANTS.items()
)

#: ``ulx3s`` alone is the 85F.
ALIASES = {"ulx3s": "ulx3s-85f"}
