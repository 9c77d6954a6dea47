"""Setup for the whole suite.

``python3 dev.py test`` runs the suite under coverage.py, whose ``patch =
["subprocess"]`` (pyproject.toml) measures every Python subprocess a test starts: the
``COVERAGE_PROCESS_CONFIG`` variable, inherited, makes coverage's ``.pth`` file start
measuring as the interpreter starts. Measuring imports modules of coverage's own
(``socket`` among them), so the few tests that start an interpreter to see what a
fresh one has loaded run it unmeasured: they are listed in ``FRESH_INTERPRETER_TESTS``
and get an environment without the variable. Plain ``python -m pytest`` sets none of
this, and these tests run the same either way.
"""

from __future__ import annotations

import pytest

#: Tests (node ids without parameters) whose subprocesses must not be measured.
FRESH_INTERPRETER_TESTS = frozenset({
    "tests/protocol/test_sans_io.py::test_importing_the_protocol_loads_no_io_library_at_run_time",
})


@pytest.fixture(autouse=True)
def _fresh_interpreters_unmeasured(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
) -> None:
    if request.node.nodeid.partition("[")[0] in FRESH_INTERPRETER_TESTS:
        for name in ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START"):
            monkeypatch.delenv(name, raising=False)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``asyncio`` run under pytest-asyncio: trio mode (which marks
    every async test ``trio`` before this runs) must leave them alone."""
    for item in items:
        if item.get_closest_marker("asyncio") is not None:
            item.own_markers[:] = [mark for mark in item.own_markers if mark.name != "trio"]
