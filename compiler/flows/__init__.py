"""What the commands do, as functions: lower a model, simulate it, build it for a board, run it on one.

Flows sit above every other layer (frontend, passes, hardware mapping, host link, ``sim/`` and ``boards/``);
only the CLI sits above them.
"""

#: The version of the layout of every JSON object the commands print with ``--json`` and of a build's
#: ``report.json`` (their ``schema_version`` key): raised when a key is renamed or removed or changes meaning.
SCHEMA_VERSION = 1
