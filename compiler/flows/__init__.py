"""What the commands do, as functions: lower a model, simulate it, build it for a board, run it on one.

Flows sit above every other layer (frontend, passes, hardware mapping, host link, ``sim/`` and ``boards/``);
only the CLI sits above them.
"""
