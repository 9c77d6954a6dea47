#!/usr/bin/env python3
"""Developer entry point for eventbus (standard library only).

Usage (from anywhere; paths are relative to this file's directory):

    python3 dev.py serve [args...]   set up .venv, then run `eventbus serve [args...]`
    python3 dev.py test [args...]    set up .venv, then run `python -m pytest [args...]`
                                     under coverage and print the coverage report
    python3 dev.py lint              set up .venv, then run ruff and mypy

Setup creates .venv with `python -m venv` if it is missing and installs the project
editable with its dev extra. The install is skipped while pyproject.toml is unchanged
since the last successful install (its hash is kept in .venv/.eventbus-installed).

Coverage: `test` runs pytest under coverage.py with branch coverage, configured in
pyproject.toml ([tool.coverage.*]). The Python subprocesses that the tests start
(`eventbus serve`, `python -m eventbus`, the examples, ...) are measured too, through
coverage's `patch = ["subprocess"]`. Each run collects its data in a temporary
directory of its own (so two runs in one tree do not mix), combines it, prints the
report (per module, with the missing lines and branches) and leaves the combined data
in .coverage, for `.venv/bin/coverage html` and the like.

A full run, `python3 dev.py test` with no arguments, enforces the targets below
(COVERAGE_COMPLETE, COVERAGE_FLOOR): it fails, even when every test passed, if a
module of eventbus/protocol/ (the sans-IO core) has a line or branch not covered, or
if any module of eventbus/ is below 90%. With arguments (`-k rooms`, a test file, `-x`,
even just `-v`) the run is partial: the report is printed, the targets are not checked.

Exit status of `test`: pytest's when it is not 0 (1 failures, 2 interrupted, 4 usage
error, 5 no tests collected), else 1 when a full run missed a coverage target, else 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

MIN_PYTHON = (3, 11)

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
EXE = ".exe" if os.name == "nt" else ""
VENV_PYTHON = BIN / f"python{EXE}"
MARKER = VENV / ".eventbus-installed"
PYPROJECT = ROOT / "pyproject.toml"
COVERAGE_DATA = ROOT / ".coverage"

# Coverage targets, enforced by a full `python3 dev.py test` (see the docstring).
# Percentages count lines and branches together, as `coverage report` does.
COVERAGE_COMPLETE = ("eventbus/protocol/",)  # every line and branch covered
COVERAGE_FLOOR = 90.0  # every other module of eventbus/

USAGE = """\
usage: python3 dev.py COMMAND [args...]

commands:
  serve [args...]   set up .venv and run `eventbus serve [args...]`
  test [args...]    set up .venv and run `python -m pytest [args...]` under coverage;
                    with no args, also enforce the coverage targets
  lint              set up .venv and run `ruff check .` and `mypy --strict eventbus`
"""


def say(message: str) -> None:
    print(f"dev.py: {message}", file=sys.stderr, flush=True)


def fail(message: str, code: int = 1) -> NoReturn:
    say(f"error: {message}")
    sys.exit(code)


def check_python() -> None:
    if sys.version_info < MIN_PYTHON:
        have = ".".join(str(part) for part in sys.version_info[:3])
        need = ".".join(str(part) for part in MIN_PYTHON)
        fail(f"Python {need}+ is required, but this is Python {have} ({sys.executable}).")


def venv_is_usable() -> bool:
    if not VENV_PYTHON.exists():
        return False
    probe = subprocess.run(
        [str(VENV_PYTHON), "-c", "import pip, sys; sys.exit(sys.version_info < (3, 11))"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return probe.returncode == 0


def create_venv() -> None:
    if VENV.exists():
        say(f"{VENV.name} is incomplete or broken; recreating it")
        shutil.rmtree(VENV)
    say(f"creating virtual environment in {VENV.name} with {sys.executable}")
    result = subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=False)
    if result.returncode != 0 or not VENV_PYTHON.exists():
        shutil.rmtree(VENV, ignore_errors=True)
        fail(
            f"`{sys.executable} -m venv` failed (exit code {result.returncode}).\n"
            "  On Debian/Ubuntu the venv module is packaged separately: install it with\n"
            "    sudo apt-get install python3-venv\n"
            "  (or the versioned package, e.g. python3.11-venv), then run this command again."
        )


def pyproject_hash() -> str:
    return hashlib.sha256(PYPROJECT.read_bytes()).hexdigest()


def install_project() -> None:
    wanted = pyproject_hash()
    try:
        installed = MARKER.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        installed = ""
    if installed == wanted:
        say(f"{VENV.name} is up to date (pyproject.toml unchanged since last install)")
        return
    say("installing eventbus in editable mode with the dev extra: pip install -e '.[dev]'")
    MARKER.unlink(missing_ok=True)
    result = subprocess.run(
        [
            str(VENV_PYTHON),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-e",
            ".[dev]",
        ],
        cwd=ROOT,
        check=False,
    )
    if result.returncode != 0:
        fail(f"pip install failed (exit code {result.returncode}); see the output above.")
    MARKER.write_text(wanted + "\n", encoding="utf-8")
    say("install done")


def setup() -> None:
    if not PYPROJECT.exists():
        fail(f"{PYPROJECT} not found")
    if not venv_is_usable():
        create_venv()
    install_project()
    # Let the tools (and any subprocesses they start) see the venv first on PATH.
    os.environ["VIRTUAL_ENV"] = str(VENV)
    os.environ["PATH"] = str(BIN) + os.pathsep + os.environ.get("PATH", "")
    os.environ.pop("PYTHONHOME", None)


def run(argv: list[str]) -> int:
    say("running: " + " ".join(argv))
    return subprocess.run(argv, cwd=ROOT, check=False).returncode


def replace_process(argv: list[str]) -> NoReturn:
    """Run argv in place of this process, so its exit code becomes ours."""
    say("running: " + " ".join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "nt":
        sys.exit(subprocess.run(argv, cwd=ROOT, check=False).returncode)
    os.chdir(ROOT)
    os.execv(argv[0], argv)


def cmd_serve(args: list[str]) -> None:
    replace_process([str(BIN / f"eventbus{EXE}"), "serve", *args])


@contextlib.contextmanager
def child_handles_ctrl_c() -> Iterator[None]:
    """Let Ctrl-C reach the child alone (it gets SIGINT too), so that pytest can stop
    cleanly and print its summary while this process waits for it."""
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_test(args: list[str]) -> None:
    full = not args
    coverage = [str(VENV_PYTHON), "-m", "coverage"]
    with tempfile.TemporaryDirectory(prefix="eventbus-coverage-") as scratch:
        # Subprocesses inherit COVERAGE_FILE and write their .coverage.* files beside it.
        os.environ["COVERAGE_FILE"] = str(Path(scratch) / ".coverage")
        with child_handles_ctrl_c():
            code = run([*coverage, "run", "-m", "pytest", *args])
        if code not in (0, 1):  # interrupted, usage error, no tests: nothing to report
            sys.exit(code)
        if run([*coverage, "combine", "--quiet"]) != 0:
            fail("coverage combine failed; see the output above")
        run([*coverage, "report"])
        missed = check_coverage(coverage, Path(scratch) / "coverage.json") if full else []
        shutil.copyfile(os.environ["COVERAGE_FILE"], COVERAGE_DATA)
    if not full:
        say("partial run (pytest arguments given): coverage targets not checked; "
            "`python3 dev.py test` with no arguments checks them")
    elif missed:
        say("coverage below target:\n" + "\n".join(f"  {line}" for line in missed))
    else:
        say(f"coverage targets met: {', '.join(COVERAGE_COMPLETE)} at 100%, "
            f"every other module at {COVERAGE_FLOOR:g}% or more")
    if code != 0:
        say(f"tests failed (pytest exit status {code}); pytest's summary is above the "
            "coverage report")
    elif missed:
        code = 1
    sys.exit(code)


def check_coverage(coverage: list[str], report: Path) -> list[str]:
    """The modules that miss their coverage target, one line each."""
    if run([*coverage, "json", "--quiet", "-o", str(report)]) != 0:
        fail("coverage json failed; see the output above")
    files = json.loads(report.read_text(encoding="utf-8"))["files"]
    missed = []
    for name, data in sorted(files.items()):
        name = name.replace(os.sep, "/")
        summary = data["summary"]
        percent = summary["percent_covered"]
        complete = (summary["covered_lines"] == summary["num_statements"]
                    and summary["covered_branches"] == summary["num_branches"])
        if name.startswith(COVERAGE_COMPLETE):
            if not complete:
                missed.append(f"{name}: {percent:.1f}%, needs 100% (sans-IO core)")
        elif percent < COVERAGE_FLOOR:
            missed.append(f"{name}: {percent:.1f}%, needs {COVERAGE_FLOOR:g}%")
    if not files:
        missed.append("no coverage data for eventbus/ at all")
    return missed


def cmd_lint(args: list[str]) -> None:
    if args:
        fail("lint takes no arguments")
    ruff_code = run([str(BIN / f"ruff{EXE}"), "check", "."])
    mypy_code = run([str(BIN / f"mypy{EXE}"), "--strict", "eventbus"])
    if ruff_code or mypy_code:
        say(f"lint failed (ruff exit {ruff_code}, mypy exit {mypy_code})")
        sys.exit(1)
    say("lint passed")


COMMANDS = {"serve": cmd_serve, "test": cmd_test, "lint": cmd_lint}


def main() -> None:
    check_python()
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "help"):
        sys.stderr.write(USAGE)
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    command, args = sys.argv[1], sys.argv[2:]
    handler = COMMANDS.get(command)
    if handler is None:
        sys.stderr.write(USAGE)
        fail(f"unknown command {command!r}", code=2)
    setup()
    handler(args)


if __name__ == "__main__":
    main()
