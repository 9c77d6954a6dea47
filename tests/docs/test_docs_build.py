"""The documentation builds with Sphinx, warnings as errors, and the pages generated
from code agree with it.

One build (``sphinx-build -W --keep-going -b html docs <tmp>``, in a subprocess, as CI
and a developer run it) serves every test in this module. It reads the working tree
only: no extension fetches anything.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from eventbus import CloseCode, ErrorCode, ServerConfig

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PROTOCOL = (ROOT / "protocol" / "PROTOCOL.md").read_text(encoding="utf-8")

pytest.importorskip("sphinx", reason="the docs extra is not installed (pip install -e .[docs])")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), str(DOCS), str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout}\n{proc.stderr}"
    return out


def page_text(site: Path, name: str) -> str:
    """The visible text of a built page, whitespace collapsed."""
    raw = (site / name).read_text(encoding="utf-8")
    raw = raw[raw.index("<article"):raw.index("</article>")]
    text = html.unescape(re.sub(r"<[^>]+>", " ", raw))
    return re.sub(r"\s+", " ", text)


@pytest.mark.timeout(150)
def test_the_docs_build_without_warnings(site: Path) -> None:
    for page in ("index.html", "tutorial/index.html", "howto/tls-proxy.html",
                 "reference/server.html", "reference/client.html", "reference/testing.html",
                 "reference/errors.html", "explanation/architecture.html", "protocol.html",
                 "benchmarks.html", "examples.html"):
        assert (site / page).is_file(), page
    assert (site / "_images" / "message-path.svg").is_file()
    assert (site / "_images" / "chat.png").is_file()


def test_the_configuration_table_lists_every_setting_with_its_default(site: Path) -> None:
    text = page_text(site, "reference/config.html")
    table = text[text.index("Setting Type Default Meaning"):]
    fields = attrs.fields(ServerConfig)
    starts = []
    for field in fields:
        # A row starts with the name and the type (a name may also appear in the
        # description of another setting).
        start = f" {field.name} {field.type} "
        assert start in table, start
        starts.append(table.index(start))
        row = table[starts[-1]:]
        assert f" {field.default!r} " in row[:200], (field.name, row[:200])
    assert starts == sorted(starts)


def _table(section_title: str) -> list[str]:
    start = PROTOCOL.index(f"## {section_title}")
    end = PROTOCOL.index("\n## ", start + 1)
    return re.findall(r"^\| `([^`]+)` \|", PROTOCOL[start:end], re.MULTILINE)


def test_protocol_tables_and_enums_agree() -> None:
    assert sorted(_table("13. Error codes")) == sorted(code.value for code in ErrorCode)
    assert sorted(_table("14. Close codes")) == sorted(str(int(code)) for code in CloseCode)


def test_the_codes_page_shows_every_code_from_protocol_md(site: Path) -> None:
    text = page_text(site, "reference/codes.html")
    for code in ErrorCode:
        assert f" {code.value} " in text, code
    for close in CloseCode:
        assert f" {int(close)} " in text, close
    # The row text is PROTOCOL.md's own, not a copy that could drift.
    assert "Slow consumer: a reliable message did not fit in the connection's outbound queue." \
        in text.replace("\u2019", "'")


def test_the_codes_page_shows_every_resume_reason(site: Path) -> None:
    from eventbus.codes import NotRecovered

    start = PROTOCOL.index("### 9.2 Rooms")
    section = PROTOCOL[start:PROTOCOL.index("\n### ", start + 1)]
    text = page_text(site, "reference/codes.html")
    for reason in NotRecovered:
        assert f"`{reason.value}`" in section, reason
        assert f" {reason.value} " in text, reason


def test_the_cli_page_is_the_real_help(site: Path) -> None:
    from eventbus.cli import build_parser

    text = page_text(site, "reference/cli.html")
    for command in ("serve", "listen", "publish", "call"):
        assert f"$ eventbus {command} --help" in text, command
    for action in build_parser()._actions:
        for option in action.option_strings:
            assert option in text, option


def test_every_page_is_reachable_from_the_index(site: Path) -> None:
    sources = {p.relative_to(DOCS).with_suffix(".html").as_posix()
               for p in DOCS.rglob("*.md") if p.name != "README.md"}
    built = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    assert sources <= built
