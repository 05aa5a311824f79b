"""The framed UART protocol between host and board: its constants and its CRC, defined once.

Both ends import this module: the gateware (:class:`hdl.uart_bridge.UartBridge`) and the host
(:mod:`compiler.host.link`). ``docs/protocol.md`` describes the frames::

    request   A5  command  length (16 bits LE)  payload  CRC (16 bits LE)
    response  5A  status   length (16 bits LE)  payload  CRC (16 bits LE)

The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR) over
the command or status byte, the length and the payload. Pure Python: no Amaranth here.
"""

from __future__ import annotations

import binascii

__all__ = ["SYNC_REQUEST", "SYNC_RESPONSE", "CMD_PING", "CMD_WRITE", "CMD_READ", "RESP_NAK", "ERR_CRC",
           "ERR_COMMAND", "ERR_LENGTH", "ERR_TIMEOUT", "ERROR_NAMES", "PROTOCOL_VERSION", "ADDR_BYTES",
           "MAX_READ_WORDS", "MAX_BURST", "CRC_INIT", "CRC_POLY", "crc16"]

SYNC_REQUEST = 0xA5
SYNC_RESPONSE = 0x5A
CMD_PING, CMD_WRITE, CMD_READ = 0x01, 0x02, 0x03
RESP_NAK = 0xFF
ERR_CRC = 1          # the frame's CRC did not match
ERR_COMMAND = 2      # unknown command
ERR_LENGTH = 3       # the length does not fit the command (or a READ count above MAX_READ_WORDS)
ERR_TIMEOUT = 4      # the frame stopped before its end for longer than the inter-byte timeout
ERROR_NAMES = {ERR_CRC: "bad CRC", ERR_COMMAND: "unknown command", ERR_LENGTH: "bad length",
               ERR_TIMEOUT: "inter-byte timeout"}
PROTOCOL_VERSION = 1
ADDR_BYTES = 3
MAX_READ_WORDS = 0xFFFF // 4                 # the answer's payload must fit the 16-bit length
MAX_BURST = (0xFFFF - ADDR_BYTES) // 4       # the same for a WRITE's payload
CRC_INIT, CRC_POLY = 0xFFFF, 0x1021


def crc16(data: bytes, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data`` continued from ``crc`` (``crc16(b"123456789") == 0x29B1``).

    ``binascii.crc_hqx`` is this CRC (polynomial :data:`CRC_POLY`, MSB first) given the initial value."""
    return binascii.crc_hqx(bytes(data), crc)
