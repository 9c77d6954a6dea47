"""protocol/PROTOCOL.md documents every code and packet type the enums define.

The enums in eventbus/codes.py and eventbus/protocol/packets.py are the source of
truth; these tests fail when one of them gains, loses or renumbers a member without
the specification following.
"""

import re
from pathlib import Path

import attrs

from eventbus.codes import CloseCode, ErrorCode
from eventbus.protocol.codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL
from eventbus.protocol.packets import PacketType, WelcomeOptions

SPEC = Path(__file__).resolve().parents[2] / "protocol" / "PROTOCOL.md"


def _section(text: str, number: int) -> str:
    """The body of the ``## <number>. ...`` section, up to the next ``## `` heading."""
    match = re.search(rf"^## {number}\. .*?$(.*?)(?=^## )", text, re.M | re.S)
    assert match, f"section {number} not found"
    return match.group(1)


def _first_cells(section: str) -> set[str]:
    """The inline-code values in the first column of the section's table rows."""
    return set(re.findall(r"^\| `([^`]+)` \|", section, re.M))


def test_spec_documents_every_code_and_packet_type() -> None:
    text = SPEC.read_text(encoding="utf-8")

    for code in ErrorCode:
        assert f"`{code.value}`" in text, f"error code {code.value} is not documented"
    for close in CloseCode:
        assert f"`{close.value}`" in text, f"close code {close.value} is not documented"
    for kind in PacketType:
        row = rf"^\| {kind.value} \| `{kind.name}` \|"
        assert re.search(row, text, re.M), f"packet type {kind.value} {kind.name} missing"

    # The catalogue tables list exactly the enums' members, nothing more.
    assert _first_cells(_section(text, 13)) == {code.value for code in ErrorCode}
    assert _first_cells(_section(text, 14)) == {str(close.value) for close in CloseCode}
    packet_rows = re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", _section(text, 6), re.M)
    assert {(int(n), name) for n, name in packet_rows} == {
        (kind.value, kind.name) for kind in PacketType
    }


def test_spec_documents_subprotocols_and_welcome_options() -> None:
    text = SPEC.read_text(encoding="utf-8")

    for subprotocol in (JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL):
        assert f"`{subprotocol}`" in text
    defaults = WelcomeOptions()
    for field in attrs.fields(WelcomeOptions):
        row = rf"^\| `{field.name}` \| {getattr(defaults, field.name)} \|"
        assert re.search(row, text, re.M), f"welcome option {field.name} or its default"
