"""Directives that render parts of the docs from their single source of truth.

- ``protocol-section``: the body of a section of ``protocol/PROTOCOL.md`` (or the
  whole document), with its links rewritten to work inside this site. The error
  and close code tables of the reference come from here, so PROTOCOL.md is the only
  place they are written; the build fails if a code table no longer matches
  :class:`eventbus.ErrorCode` / :class:`eventbus.CloseCode`.
- ``config-table``: every field of :class:`eventbus.ServerConfig` with its type,
  default and the ``#:`` comment above it in ``eventbus/server/config.py``.
- ``cli-help``: the ``--help`` text of the ``eventbus`` command and its subcommands,
  from the real argparse parser.

Everything is read from the working tree at build time; nothing is fetched.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import re
from pathlib import Path
from typing import Any, ClassVar

import attrs
from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "protocol" / "PROTOCOL.md"
#: The page that includes the whole of PROTOCOL.md (its anchors are the targets of
#: the links rewritten in sections shown elsewhere).
PROTOCOL_DOC = "protocol"
#: Sections whose first table lists codes that must match an enum.
CODE_TABLES = {"13. Error codes": "ErrorCode", "14. Close codes": "CloseCode"}

_HEADING = re.compile(r"^(#{2,6}) (.+)$", re.MULTILINE)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FIRST_CELL = re.compile(r"^\| `([^`]+)` \|", re.MULTILINE)


def protocol_text() -> str:
    return PROTOCOL.read_text(encoding="utf-8")


def protocol_section(text: str, title: str) -> str:
    """The body of the ``##`` section whose heading is ``title``, without the heading
    and up to the next heading of the same or a higher level."""
    for match in _HEADING.finditer(text):
        if match.group(2).strip() == title:
            level = len(match.group(1))
            start = match.end()
            for following in _HEADING.finditer(text, start):
                if len(following.group(1)) <= level:
                    return text[start:following.start()].strip("\n")
            return text[start:].strip("\n")
    raise ExtensionError(f"PROTOCOL.md has no section titled {title!r}")


def table_codes(section: str) -> list[str]:
    """The codes in the first column of a section's table."""
    return _FIRST_CELL.findall(section)


def _rewrite_links(text: str, to_protocol: str | None) -> str:
    """Make PROTOCOL.md's links valid on a page of this site.

    ``#anchor`` links point into the protocol page when the text is shown on
    another page (``to_protocol`` is the relative path to it); links to files of
    the repository (the test vectors) become plain text, since the site does not
    hold those files.
    """

    def fix(match: re.Match[str]) -> str:
        target = match.group(1)
        if target.startswith("#"):
            return f"]({to_protocol}{target})" if to_protocol else match.group(0)
        if "://" in target:
            return match.group(0)
        return "](#vectors)" if to_protocol is None else f"]({to_protocol}#17-test-vectors)"

    return _LINK.sub(fix, text)


class ProtocolSection(SphinxDirective):
    """``{protocol-section} TITLE``: the body of a PROTOCOL.md section (no
    argument: the whole document)."""

    optional_arguments = 1
    final_argument_whitespace = True
    has_content = False

    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(str(PROTOCOL))
        text = protocol_text()
        if self.arguments:
            title = self.arguments[0].strip()
            body = protocol_section(text, title)
            enum_name = CODE_TABLES.get(title)
            if enum_name is not None:
                _check_codes(body, enum_name)
            here = posixpath.dirname(self.env.docname)
            to_protocol = posixpath.relpath(PROTOCOL_DOC, here or ".") + ".md"
            body = _rewrite_links(body, to_protocol)
            match_titles = False
        else:
            # The whole document: drop the title line, the page has its own.
            body = _rewrite_links(text.split("\n", 1)[1], None)
            body += "\n\n(vectors)=\n"
            match_titles = True
        container = nodes.container()
        self.state.nested_parse(
            StringList(body.splitlines(), source=str(PROTOCOL)), 0, container,
            match_titles=match_titles,
        )
        return container.children


def _check_codes(section: str, enum_name: str) -> None:
    import eventbus

    enum = getattr(eventbus, enum_name)
    documented = table_codes(section)
    expected = [str(int(member)) if isinstance(member, int) else str(member.value)
                for member in enum]
    if sorted(documented) != sorted(expected):
        raise ExtensionError(
            f"PROTOCOL.md's table of {enum_name} disagrees with eventbus.{enum_name}: "
            f"only in PROTOCOL.md {sorted(set(documented) - set(expected))}, "
            f"only in the enum {sorted(set(expected) - set(documented))}"
        )


def config_rows() -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) of every ServerConfig field, in order."""
    from eventbus import ServerConfig

    docs = ModuleAnalyzer.for_module("eventbus.server.config").find_attr_docs()
    rows = []
    for field in attrs.fields(ServerConfig):
        lines = docs.get(("ServerConfig", field.name))
        if not lines:
            raise ExtensionError(f"ServerConfig.{field.name} has no #: comment to document it")
        description = " ".join(line.strip() for line in lines if line.strip())
        rows.append((field.name, str(field.type), repr(field.default), description))
    return rows


def _cell(text: str) -> str:
    return text.replace("``", "`").replace("|", "\\|")


class ConfigTable(SphinxDirective):
    """``{config-table}``: the table of ServerConfig's settings."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(str(ROOT / "eventbus" / "server" / "config.py"))
        lines = ["| Setting | Type | Default | Meaning |", "|---|---|---|---|"]
        for name, kind, default, description in config_rows():
            lines.append(f"| `{name}` | `{_cell(kind)}` | `{_cell(default)}` | "
                         f"{_cell(description)} |")
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="ServerConfig"), 0, container)
        return container.children


class MetricsTable(SphinxDirective):
    """``{metrics-table}``: every metric a bus exposes, read from its collector."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from eventbus import EventBus
        from eventbus.server.metrics import metric_reference

        self.env.note_dependency(str(ROOT / "eventbus" / "server" / "metrics.py"))
        lines = ["| Metric | Type | Labels | Meaning |", "|---|---|---|---|"]
        for name, kind, labels, doc in metric_reference(EventBus()):
            suffix = "_total" if kind == "counter" else ""
            shown = ", ".join(f"`{label}`" for label in labels) or "none"
            lines.append(f"| `{name}{suffix}` | {kind} | {shown} | {_cell(doc)} |")
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="metrics"), 0, container)
        return container.children


def cli_help(command: str | None, width: int = 88) -> str:
    """``eventbus [command] --help``, as printed in a terminal ``width`` columns wide."""
    from eventbus.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        parser = build_parser()
        if command is not None:
            subparsers = next(
                action for action in parser._actions
                if isinstance(action, argparse._SubParsersAction)
            )
            parser = subparsers.choices[command]
        return parser.format_help()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


class CliHelp(SphinxDirective):
    """``{cli-help} [COMMAND]``: the help text of ``eventbus [COMMAND]``."""

    optional_arguments = 1
    has_content = False
    option_spec: ClassVar[dict[str, Any]] = {"width": directives.positive_int}

    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(str(ROOT / "eventbus" / "cli.py"))
        command = self.arguments[0] if self.arguments else None
        text = cli_help(command, self.options.get("width", 88))
        prompt = f"$ eventbus {command + ' ' if command else ''}--help\n"
        block = nodes.literal_block(prompt + text, prompt + text)
        block["language"] = "text"
        return [block]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("protocol-section", ProtocolSection)
    app.add_directive("config-table", ConfigTable)
    app.add_directive("cli-help", CliHelp)
    app.add_directive("metrics-table", MetricsTable)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
