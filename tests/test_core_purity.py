"""The Raft core must stay pure: no IO, no clock, no event loop."""

import ast
import subprocess
import sys
from pathlib import Path

CORE_MODULES = ["core", "log", "progress", "quorum", "types", "config", "errors"]
FORBIDDEN = {"asyncio", "socket", "os", "time", "threading", "select", "selectors"}
RAFT_DIR = Path(__file__).parent.parent / "src" / "hacoord" / "raft"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_core_modules_import_no_io_or_clock() -> None:
    for name in CORE_MODULES:
        bad = _imports(RAFT_DIR / f"{name}.py") & FORBIDDEN
        assert not bad, f"hacoord/raft/{name}.py imports {sorted(bad)}"


def test_importing_the_core_loads_no_event_loop_or_sockets() -> None:
    code = (
        "import sys; import hacoord.raft.core; "
        "print(','.join(m for m in ('asyncio', 'socket', 'selectors') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
