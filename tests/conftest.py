import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Imported here, at collection, on purpose: hypothesis' pytest plugin otherwise imports it
# at session end to print its summary, and pytest then rewrites its modules with
# ast.parse, which on CPython 3.11.7 can fail with "SystemError: AST constructor recursion
# depth mismatch" once the recursion limit has moved during the session (CPython gh-106905).
import hypothesis  # noqa: F401
import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).parent))


# One MariaDB test bed per test module (module-scoped event loop), reset between tests.
# A missing MariaDB skips the module, except under CI=true where it is a failure.


@dataclass
class _SharedBed:
    bed: Any
    fresh: bool = True


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def _shared_mariadb(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[_SharedBed]:
    from hacoord.adapters.mysql.testbed import (
        MariaDBTestBed,
        MariaDBUnavailableError,
        ensure_mariadb_installed,
    )

    try:
        ensure_mariadb_installed()
    except MariaDBUnavailableError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"MariaDB is required when CI=true but is unavailable: {e}")
        pytest.skip(f"MariaDB unavailable: {e}")
    async with MariaDBTestBed(tmp_path_factory.mktemp("mariadb")) as bed:
        yield _SharedBed(bed)


@pytest_asyncio.fixture(loop_scope="module")
async def bed(_shared_mariadb: _SharedBed) -> Any:
    """The module's MariaDB test bed, reset to its initial state for each test."""
    if not _shared_mariadb.fresh:
        await _shared_mariadb.bed.reset()
    _shared_mariadb.fresh = False
    return _shared_mariadb.bed
