"""The layers of the project (docs/architecture.md): every import, function-local ones included, goes
from a higher layer to a lower one, so there is no cycle; ``hdl/`` imports nothing of the project; only
the frontend imports torch."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Each unit's layer: a unit may import only from units of a lower layer (and from itself).
LAYERS = {
    "hdl": 0,                       # Amaranth cores, the protocol, widths: nothing of the project
    "compiler.errors": 0,           # the compiler's one exception type
    "compiler.ir": 1,               # the integer IR, its checker, the golden model, metrics
    "compiler.frontend": 2,         # the PyTorch model, training, datasets, checkpoints: produces the IR
    "compiler.passes": 2,           # lowering passes: IR -> IR
    "compiler.hw": 3,               # the IR mapped onto hardware: plan and costs
    "compiler.host": 4,             # the serial link and driver
    "sim": 4,                       # simulators of the hardware
    "boards": 4,                    # boards, their toolchain, flashing
    "compiler.flows": 5,            # lower, simulate, build, run
    "compiler.cli": 6,              # the command line
    "compiler.api": 6,              # the Python API (docs/api.md): the commands as functions
    "compiler.__main__": 7,
    "bench": 8,                     # measurements, on top of everything
}
PACKAGES = ("compiler", "hdl", "boards", "sim", "bench")


def unit_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if parts[0] == "compiler":
        if len(parts) == 1:
            return "compiler"
        return f"compiler.{parts[1]}"
    return parts[0]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import in ``path`` (or in ``text`` as if it were ``path``'s),
    relative ones resolved."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            out.append((node.lineno, name))
            out += [(node.lineno, f"{name}.{a.name}") for a in node.names]
    return out


def project_files():
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_every_unit_has_a_layer():
    units = {unit_of(module_name(p)) for p in project_files()}
    units.discard("compiler")                     # the package's own __init__
    assert units <= set(LAYERS), f"units without a layer: {sorted(units - set(LAYERS))}"


def violations(path: Path, text: str | None = None) -> list[str]:
    """The imports of ``path`` (or of ``text`` in its place) that go up or across the layers."""
    src = unit_of(module_name(path))
    bad, seen = [], set()
    for line, target in imports(path, text):
        dst = unit_of(target)
        if dst is None or dst == src or "compiler" in (src, dst) or dst not in LAYERS or (line, dst) in seen:
            continue                               # not the project's; the package itself; "compiler.<name>"
        seen.add((line, dst))
        if LAYERS[dst] >= LAYERS[src]:
            bad.append(f"{path.relative_to(ROOT)}:{line}: {src} (layer {LAYERS[src]}) imports {target} "
                       f"({dst}, layer {LAYERS[dst]})")
    return bad


def test_imports_go_down_the_layers():
    bad = [v for path in project_files() for v in violations(path)]
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_only_the_frontend_imports_torch():
    bad = [f"{path.relative_to(ROOT)}:{line}" for path in project_files()
           if unit_of(module_name(path)) not in ("compiler.frontend", "bench")
           for line, target in imports(path) if target.split(".")[0] == "torch"]
    assert not bad, f"torch imported outside compiler/frontend: {bad}"


@pytest.mark.parametrize("source, statement", [
    ("compiler/ir/ops.py", "from ..flows import build"),         # a cycle: flows imports the IR
    ("hdl/uart.py", "from compiler.errors import UserError"),   # hdl importing the project
    ("sim/uart_sim.py", "from compiler.host.link import SerialPort"),  # across one layer (the old cycle)
    ("compiler/hw/program.py", "    from ..flows.lower import lower"),  # function-local imports count too
])
def test_an_import_against_the_layers_is_caught(source, statement):
    path = ROOT / source
    text = path.read_text()
    if statement.startswith(" "):
        text += "\n\ndef _f():\n" + statement + "\n"
    else:
        text += "\n" + statement + "\n"
    assert violations(path) == [] and len(violations(path, text)) == 1
