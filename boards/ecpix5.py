"""LambdaConcept ECPIX-5: 100 MHz oscillator, FTDI FT2232H USB JTAG and UART (``uart`` 0, up to 12 Mbaud),
four RGB LEDs. The resource totals are what nextpnr-ecp5 reports as available for each device.
"""

from amaranth_boards import ecpix5

from .spec import BoardSpec, Led

_COMMON = dict(package="BG554", speed=8, clock="clk100", clock_mhz=100.0, uart=("uart", 0),
               leds=(*(Led("rgb_led", n, "g") for n in range(4)), *(Led("rgb_led", n, "r") for n in range(4))),
               loader_board="ecpix5")

SPECS = (
    BoardSpec(name="ecpix5-45f", platform=ecpix5.ECPIX545Platform, device="LFE5UM5G-45F",
              lut4=43848, ff=43848, dp16kd=108, mult18x18d=72, **_COMMON),
    BoardSpec(name="ecpix5-85f", platform=ecpix5.ECPIX585Platform, device="LFE5UM5G-85F",
              lut4=83640, ff=83640, dp16kd=208, mult18x18d=156, **_COMMON),
)

ALIASES = {"ecpix5": "ecpix5-85f"}
