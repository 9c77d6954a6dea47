"""The sans-IO guarantee: eventbus.protocol (with errors.py and codes.py) imports
nothing that does I/O or reads a clock.

Checked statically with ``ast``, following imports inside the eventbus package
transitively (``eventbus/__init__.py`` is not followed: it loads the client and the
server lazily), and at run time in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "eventbus"
FORBIDDEN = frozenset({
    "trio", "trio_websocket", "wsproto", "h11", "socket", "ssl", "asyncio", "time",
    "selectors",
})


def module_file(module: str) -> Path | None:
    """The source file of an eventbus module, or None if it does not exist."""
    parts = module.split(".")
    assert parts[0] == "eventbus"
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names, relative ones resolved), anywhere
    in the file: top level, functions, ``if TYPE_CHECKING`` blocks."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                assert node.module is not None
                target = node.module
            found.add(target)
            # `from package import submodule` imports the submodule.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if candidate.startswith("eventbus.") and module_file(candidate):
                    found.add(candidate)
    return found


def closure(roots: list[Path]) -> dict[str, set[str]]:
    """Imports of each module reachable from ``roots`` inside eventbus, by module."""
    seen: dict[str, set[str]] = {}
    todo = [module_name(path) for path in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name)
        assert path is not None, name
        seen[name] = imports_of(path)
        for imported in seen[name]:
            # The eventbus package __init__ itself is not followed (see the docstring).
            if imported.startswith("eventbus.") and module_file(imported):
                todo.append(imported)
    return seen


ROOTS = [
    *sorted((PACKAGE_DIR / "protocol").glob("*.py")),
    PACKAGE_DIR / "errors.py",
    PACKAGE_DIR / "codes.py",
]


def test_roots_exist() -> None:
    names = {module_name(path) for path in ROOTS}
    assert {"eventbus.protocol", "eventbus.protocol.codec", "eventbus.protocol.packets",
            "eventbus.errors", "eventbus.codes"} <= names


def test_the_walker_sees_real_imports() -> None:
    graph = closure(ROOTS)
    assert {"json", "msgpack", "eventbus.codes", "eventbus.errors",
            "eventbus.protocol.packets"} <= graph["eventbus.protocol.codec"]
    assert "eventbus" not in graph


@pytest.mark.parametrize("root", ROOTS, ids=[module_name(path) for path in ROOTS])
def test_no_io_imports(root: Path) -> None:
    graph = closure([root])
    offenders = {
        f"{module} imports {imported}"
        for module, imported_names in graph.items()
        for imported in imported_names
        if imported.split(".")[0] in FORBIDDEN
    }
    assert not offenders
    # The protocol may not depend on the server (or anything beyond itself).
    allowed = {"eventbus.codes", "eventbus.errors"}
    outside = {
        name for name in graph
        if name not in allowed and not name.startswith("eventbus.protocol")
    }
    assert not outside


IO_MODULES = ("trio", "trio_websocket", "wsproto", "h11", "cattrs", "socket", "ssl", "asyncio")


@pytest.mark.parametrize("statement", [
    "import eventbus.protocol",
    "import eventbus",
    "from eventbus.protocol import JsonCodec, MsgpackCodec, Role; JsonCodec(Role.SERVER)",
    "import eventbus.errors, eventbus.codes",
    # The clients' sans-IO core, that the trio and asyncio clients share.
    "import eventbus.client.core",
    "from eventbus.client.core import SessionState, route; SessionState()",
])
def test_importing_the_protocol_loads_no_io_library_at_run_time(statement: str) -> None:
    # The static walk above does not follow eventbus/__init__.py, which runs first on
    # any import of a submodule; this runs the import for real, in a fresh interpreter.
    probe = (
        f"{statement}\n"
        "import sys\n"
        f"print(' '.join(m for m in {IO_MODULES!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_the_io_layers_still_load_on_first_use() -> None:
    probe = "import eventbus, sys; eventbus.EventBus; print('trio' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"
