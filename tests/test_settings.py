"""``eventbus serve``'s settings: flags, ``EVENTBUS_*`` variables, a TOML file, the
app's own ServerConfig, the defaults; and ``--print-config``.

Most tests call ``main(["serve", "--print-config", ...])`` in this process and read
the TOML it prints: the values, and each one's source from its comment. The
environment is emptied of ``EVENTBUS_*`` variables for each test, and apps are
written into a temporary current directory (see ``app_dir``). Nothing here listens
on a socket; tests/test_serve_logs.py serves for real.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest

from eventbus import ServerConfig
from eventbus.cli import build_parser, main
from eventbus.settings import BUS, SERVE, Kind, ServeOptions, load
from eventbus.settings.table import settings_of


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("EVENTBUS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The current directory, with the app ``cfg_app:bus`` (its own settings:
    open_rooms, ping_interval 5, max_rooms 7, one allowed origin); it is forgotten
    afterwards, so that the next test imports its own."""
    (tmp_path / "cfg_app.py").write_text(
        "import eventbus\n\nbus = eventbus.EventBus(open_rooms=True, ping_interval=5.0, "
        "max_rooms=7, allowed_origins=['https://app.example'])\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    importlib.invalidate_caches()
    yield tmp_path
    sys.modules.pop("cfg_app", None)


def print_config(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["serve", "--print-config", *argv]) == 0
    return capsys.readouterr().out


def sources(text: str) -> dict[str, str]:
    """``{"serve.port": "env EVENTBUS_PORT", ...}``: each key's comment."""
    found = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("["):
            table = line.strip("[]")
        elif line and not line.startswith("#"):
            key = line.partition("=")[0].strip()
            found[f"{table}.{key}"] = line.rpartition("  # ")[2]
    return found


def fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``serve --print-config ARGV``, which must fail with 2; its one stderr line."""
    assert main(["serve", "--print-config", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("eventbus serve: "), lines
    return lines[0].removeprefix("eventbus serve: ")


# --- names: generated from the fields ----------------------------------------------------


def test_every_server_config_field_is_a_flag_a_variable_and_a_bus_key() -> None:
    serve_parser = next(action for action in build_parser()._actions
                        if isinstance(action, argparse._SubParsersAction)).choices["serve"]
    options = {option: action for action in serve_parser._actions
               for option in action.option_strings}
    fields = attrs.fields(ServerConfig)
    assert [setting.name for setting in BUS] == [field.name for field in fields]
    for field, setting in zip(fields, BUS, strict=True):
        assert setting.table == "bus"
        assert setting.flag == "--" + field.name.replace("_", "-")
        assert setting.env == "EVENTBUS_" + field.name.upper()
        assert setting.flag in options, setting.flag
        assert options[setting.flag].dest == field.name
        # The help is the field's #: comment, not a placeholder.
        assert setting.doc != f"ServerConfig.{field.name}", field.name
        assert setting.doc.split()[0].lower() in (options[setting.flag].help or "").lower()


def test_the_serve_options_are_settings_too() -> None:
    assert [setting.name for setting in SERVE] == [f.name for f in attrs.fields(ServeOptions)]
    assert {s.env for s in SERVE} >= {"EVENTBUS_HOST", "EVENTBUS_PORT", "EVENTBUS_REDIS",
                                      "EVENTBUS_LOG_FORMAT", "EVENTBUS_WORKERS"}
    assert next(s for s in SERVE if s.name == "app").flag == "APP"  # the positional


def test_a_field_added_later_is_a_setting_by_itself() -> None:
    @attrs.frozen(kw_only=True)
    class Later:
        #: Whether to.
        flag: bool = False
        #: How many
        #: (two lines).
        count: int | None = None
        #: How long.
        wait: float = 1.5
        #: Which.
        level: Literal["a", "b"] = "a"
        #: Whom.
        names: tuple[str, ...] = ()
        label: str = "x"

    found = {s.name: s for s in settings_of(Later, "bus")}
    assert found["flag"].kind == Kind("bool")
    assert found["count"].kind == Kind("int", optional=True)
    assert found["count"].doc == "How many (two lines)."
    assert found["wait"].kind == Kind("float")
    assert found["level"].kind == Kind("choice", choices=("a", "b"))
    assert found["names"].kind == Kind("strings")
    assert found["label"].doc == "Later.label"  # no #: comment: a placeholder, no crash
    assert found["wait"].env == "EVENTBUS_WAIT"


def test_a_field_of_a_type_no_source_can_spell_fails_loudly() -> None:
    @attrs.frozen
    class Odd:
        #: A mapping.
        table: dict[str, int] = attrs.Factory(dict)

    with pytest.raises(TypeError, match=r"Odd.table has the type .* cannot read"):
        settings_of(Odd, "bus")


# --- every type, from each source ------------------------------------------------------

# (setting, environment/flag text, TOML value, the value they mean)
VALUES: list[tuple[str, str, str, Any]] = [
    ("open_rooms", "yes", "true", True),
    ("open_rooms", "OFF", "false", False),
    ("ping_interval", "2.5", "2.5", 2.5),
    ("ping_interval", "3", "3", 3.0),
    ("max_rooms", "7", "7", 7),
    ("max_connections", "50", "50", 50),
    ("max_connections", "none", '"none"', None),
    ("allowed_origins", "https://a.example, https://b.example",
     '["https://a.example", "https://b.example"]', ["https://a.example", "https://b.example"]),
    ("allowed_origins", "", "[]", []),
    ("allowed_origins", "None", '"none"', None),
    ("host", "::1", '"::1"', "::1"),
    ("certfile", "none", '"none"', None),
    ("log_level", "DEBUG", '"debug"', "debug"),
    ("log_format", "json", '"json"', "json"),
]


def _table(name: str) -> str:
    return "bus" if any(s.name == name for s in BUS) else "serve"


def _printed(text: str, name: str) -> Any:
    value = tomllib.loads(text)[_table(name)][name]
    return None if value == "none" else value


@pytest.mark.parametrize(("name", "text", "toml", "expected"), VALUES)
def test_each_type_reads_from_the_environment_a_flag_and_the_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    name: str, text: str, toml: str, expected: Any,
) -> None:
    setting = next(s for s in SERVE + BUS if s.name == name)
    monkeypatch.setenv(setting.env, text)
    out = print_config(capsys)
    assert _printed(out, name) == expected
    assert sources(out)[f"{setting.table}.{name}"] == f"env {setting.env}"
    monkeypatch.delenv(setting.env)

    if setting.kind.name == "bool":
        flag = [setting.flag if expected else setting.flag.replace("--", "--no-")]
    else:
        flag = [f"{setting.flag}={text}"]
    out = print_config(capsys, *flag)
    assert _printed(out, name) == expected
    assert sources(out)[f"{setting.table}.{name}"].startswith("flag --")

    path = tmp_path / "settings.toml"
    path.write_text(f"[{setting.table}]\n{name} = {toml}\n")
    out = print_config(capsys, "--config", str(path))
    assert _printed(out, name) == expected
    assert sources(out)[f"{setting.table}.{name}"] == f"file {path}"


def test_the_config_file_may_be_named_by_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    (tmp_path / "env.toml").write_text("[serve]\nport = 1111\n")
    (tmp_path / "flag.toml").write_text("[serve]\nport = 2222\n")
    monkeypatch.setenv("EVENTBUS_CONFIG", str(tmp_path / "env.toml"))
    assert tomllib.loads(print_config(capsys))["serve"]["port"] == 1111
    out = print_config(capsys, "--config", str(tmp_path / "flag.toml"))  # the flag wins
    assert tomllib.loads(out)["serve"]["port"] == 2222
    assert f"# Config file read: {tmp_path / 'flag.toml'}" in out


# --- precedence ----------------------------------------------------------------------------

LEVELS = ["default", "app", "file", "env", "flag"]


@pytest.mark.parametrize("top", LEVELS)
def test_each_level_wins_over_the_ones_below(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, app_dir: Path,
    top: str,
) -> None:
    """ping_interval (a bus setting) is 25 by default, 5 in the app, then 6, 7, 8 in
    the file, environment and flags; port (a serve setting) has no app level."""
    present = LEVELS[:LEVELS.index(top) + 1]
    argv = ["cfg_app:bus"] if "app" in present else []
    if "file" in present:
        (app_dir / "cfg.toml").write_text("[serve]\nport = 1001\n[bus]\nping_interval = 6\n")
        argv += ["--config", "cfg.toml"]
    if "env" in present:
        monkeypatch.setenv("EVENTBUS_PORT", "1002")
        monkeypatch.setenv("EVENTBUS_PING_INTERVAL", "7")
    if "flag" in present:
        argv += ["--port", "1003", "--ping-interval", "8"]
    out = print_config(capsys, *argv)
    values, where = tomllib.loads(out), sources(out)
    expected = {"default": 25.0, "app": 5.0, "file": 6.0, "env": 7.0, "flag": 8.0}
    assert values["bus"]["ping_interval"] == expected[top]
    assert where["bus.ping_interval"].split()[0] == top
    port = {"default": 8765, "app": 8765, "file": 1001, "env": 1002, "flag": 1003}
    assert values["serve"]["port"] == port[top]
    assert where["serve.port"].split()[0] == ("default" if top == "app" else top)
    # The app's other settings stay the app's, whatever replaced ping_interval.
    if "app" in present:
        assert values["bus"]["max_rooms"] == 7
        assert where["bus.max_rooms"] == "app"
        assert where["bus.max_frame"] == "default"  # the app left it alone
        assert where["serve.app"] == "flag APP"


def test_print_config_round_trips_as_a_config_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, app_dir: Path,
) -> None:
    (app_dir / "cfg.toml").write_text('[bus]\nmax_frame = 4096\n[serve]\nredis_prefix = "p"\n')
    monkeypatch.setenv("EVENTBUS_ALLOWED_ORIGINS", "")
    monkeypatch.setenv("EVENTBUS_MAX_CONNECTIONS", "none")
    # Characters a TOML string must escape, in a value no server will ever use.
    monkeypatch.setenv("EVENTBUS_HOST", 'a"b\\c\td\x7fé')
    first = print_config(capsys, "cfg_app:bus", "--config", "cfg.toml", "--no-open-rooms",
                         "--log-format", "json", "--rate", "0")
    (app_dir / "saved.toml").write_text(first)
    for name in ("EVENTBUS_ALLOWED_ORIGINS", "EVENTBUS_MAX_CONNECTIONS", "EVENTBUS_HOST"):
        monkeypatch.delenv(name)
    second = print_config(capsys, "--config", "saved.toml")  # the app comes from the file
    assert tomllib.loads(second) == tomllib.loads(first)
    assert tomllib.loads(first)["serve"]["host"] == 'a"b\\c\td\x7fé'
    assert set(sources(second).values()) == {"file saved.toml"}
    # Every setting is there, in the order of its class.
    loaded = tomllib.loads(first)
    assert list(loaded) == ["serve", "bus"]
    assert list(loaded["serve"]) == [s.name for s in SERVE]
    assert list(loaded["bus"]) == [s.name for s in BUS]


def test_print_config_names_the_defaults_and_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    out = print_config(capsys)
    where = sources(out)
    assert where["serve.app"] == "default (the built-in demo)"
    assert where["bus.open_rooms"] == "app"  # the demo's open rooms
    assert where["bus.ping_interval"] == "default"
    assert tomllib.loads(out)["serve"]["certfile"] == "none"


# --- errors: one line, naming the setting and its source, exit 2 ------------------------

BAD_ENV = [
    ("EVENTBUS_PORT", "abc", "EVENTBUS_PORT: port must be an integer, not 'abc'"),
    ("EVENTBUS_PORT", "70000", "EVENTBUS_PORT: port must be 0 to 65535, not 70000"),
    ("EVENTBUS_WORKERS", "0", "EVENTBUS_WORKERS: workers must be at least 1, not 0"),
    ("EVENTBUS_OPEN_ROOMS", "maybe", "EVENTBUS_OPEN_ROOMS: open_rooms must be true or false, "
     "not 'maybe'"),
    ("EVENTBUS_PING_INTERVAL", "-1", "EVENTBUS_PING_INTERVAL: ping_interval must be positive, "
     "not -1.0"),
    ("EVENTBUS_PING_INTERVAL", "nan", "EVENTBUS_PING_INTERVAL: ping_interval must be a finite "
     "number, not nan"),
    ("EVENTBUS_PING_INTERVAL", "soon", "ping_interval must be a number, not 'soon'"),
    ("EVENTBUS_MAX_CONNECTIONS", "lots", "max_connections must be an integer or none, not "
     "'lots'"),
    ("EVENTBUS_MAX_CONNECTIONS", "0", "max_connections must be positive, not 0"),
    ("EVENTBUS_MAX_NAME", "1000", "EVENTBUS_MAX_NAME: max_name must be 1 to "),
    ("EVENTBUS_LOG_LEVEL", "loud", "EVENTBUS_LOG_LEVEL: log_level must be one of debug, info, "
     "warning, error, not 'loud'"),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_ENV)
def test_a_bad_variable_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    name: str, text: str, message: str,
) -> None:
    monkeypatch.setenv(name, text)
    error = fails(capsys)
    assert error.startswith(f"{name}: "), error
    assert message in error, error


BAD_FILE = [
    ("[bus]\nmax_rooms = 1.5\n", "[bus] max_rooms: max_rooms must be an integer, not 1.5"),
    ("[bus]\nmax_rooms = true\n", "[bus] max_rooms: max_rooms must be an integer, not True"),
    ("[bus]\nping_interval = inf\n", "ping_interval must be a finite number, not inf"),
    ("[bus]\nping_interval = '5'\n", "ping_interval must be a number, not '5'"),
    ("[bus]\nopen_rooms = 1\n", "open_rooms must be true or false, not 1"),
    ("[bus]\nallowed_origins = 'https://a.example'\n",
     "allowed_origins must be an array of strings or none, not 'https://a.example'"),
    ("[bus]\nallowed_origins = [1]\n", "allowed_origins must be an array of strings"),
    ("[serve]\nhost = 1\n", "[serve] host: host must be a string, not 1"),
    ("[serve]\nport = -1\n", "[serve] port: port must be 0 to 65535, not -1"),
    ("[bus]\ndrain_timeout = -1\n", "drain_timeout must not be negative, not -1.0"),
    ("serve = 1\n", "serve must be a table ([serve]), not 1"),
    ("[bus\n", "not valid TOML: "),
]


@pytest.mark.parametrize(("content", "message"), BAD_FILE)
def test_a_bad_value_in_the_file_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str,
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    error = fails(capsys, "--config", str(path))
    assert error.startswith(f"{path}: "), error
    assert message in error, error


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "x"], "--port: port must be an integer, not 'x'"),
        (["--ping-interval", "0"], "--ping-interval: ping_interval must be positive, not 0.0"),
        (["--allowed-origins", "none", "--max-rooms", "-3"],
         "--max-rooms: max_rooms must be positive, not -3"),
        (["--config", "no-such.toml"], "no-such.toml: cannot read the config file: "
         "No such file or directory"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str,
) -> None:
    assert fails(capsys, *argv) == message


def test_unknown_keys_in_the_file_are_named_together(
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    path = tmp_path / "typos.toml"
    path.write_text(
        "port = 1\n"
        "[serve]\nlog-level = 'info'\nping_interval = 3\nfoo = 1\n"
        "[bus]\nping_intervall = 3\nmax_rooms_per_client = 2\n"
        "[buss]\nx = 1\n"
        "[admin]\nx = 1\n"
    )
    error = fails(capsys, "--config", str(path))
    assert error == (
        f"{path}: unknown settings: port (put it in [serve]), [serve] log-level (it is "
        "[serve] log_level), [serve] ping_interval (it is [bus] ping_interval), [serve] foo, "
        "[bus] ping_intervall (did you mean ping_interval?), [bus] max_rooms_per_client "
        "(did you mean max_rooms?), buss (did you mean [bus]?), admin (the tables are "
        "[serve] and [bus])"
    )


def test_unknown_variables_that_look_like_settings_are_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENTBUS_PING_INTERVALL", "3")
    monkeypatch.setenv("EVENTBUS_LOGLEVEL", "debug")
    monkeypatch.setenv("EVENTBUS_REDIS_URL", "redis://h")
    monkeypatch.setenv("eventbus_port", "1")
    monkeypatch.setenv("EVENTBUS_CONFIG_FILE", "x.toml")
    assert fails(capsys) == (
        "unknown environment variables: EVENTBUS_CONFIG_FILE (did you mean EVENTBUS_CONFIG?), "
        "EVENTBUS_LOGLEVEL (did you mean EVENTBUS_LOG_LEVEL?), EVENTBUS_PING_INTERVALL (did "
        "you mean EVENTBUS_PING_INTERVAL?), EVENTBUS_REDIS_URL (did you mean EVENTBUS_REDIS?), "
        "eventbus_port (did you mean EVENTBUS_PORT?)"
    )


def test_an_apps_own_variables_are_left_alone(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What the cluster tests and the abuse benchmark give their apps.
    for name in ("EVENTBUS_TEST_REDIS", "EVENTBUS_TEST_PREFIX", "EVENTBUS_ABUSE_SETTINGS"):
        monkeypatch.setenv(name, "x")
    print_config(capsys)


def test_an_app_that_cannot_load_is_said_after_the_settings_are_checked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, app_dir: Path,
) -> None:
    monkeypatch.setenv("EVENTBUS_RATE", "-1")
    assert fails(capsys, "no_such_app:bus") == "EVENTBUS_RATE: rate must not be negative, not -1"
    monkeypatch.delenv("EVENTBUS_RATE")
    assert fails(capsys, "no_such_app:bus").startswith("no module named 'no_such_app'")


# --- workers -------------------------------------------------------------------------------


def test_workers_get_the_same_settings_and_the_log_hides_the_redis_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    started: list[tuple[int, list[str]]] = []

    async def supervise(count: int, argv: list[str]) -> int:
        started.append((count, argv))
        return 0

    monkeypatch.setattr("eventbus.workers.supervise", supervise)
    monkeypatch.setenv("EVENTBUS_WORKERS", "3")
    monkeypatch.setenv("EVENTBUS_REDIS", "redis://:secret@127.0.0.1:1/0")
    caplog.set_level(logging.INFO, logger="eventbus.cli")
    assert main(["serve", "--port", "9999", "--rate", "5"]) == 0
    # Each worker is one of them, with the same flags; the environment (and with it
    # the Redis URL and its password) it inherits, so that `ps` does not show it.
    assert started == [(3, ["--port", "9999", "--rate", "5", "--workers", "1",
                            "--reuse-port"])]
    assert "redis://:***@127.0.0.1:1/0" in caplog.text
    assert "secret" not in caplog.text


def test_workers_do_not_start_with_a_bad_bus_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("eventbus.workers.supervise", None)  # never reached
    assert main(["serve", "--workers", "2", "--redis", "redis://127.0.0.1:1/0",
                 "--max-rooms", "0"]) == 2
    assert capsys.readouterr().err == (
        "eventbus serve: --max-rooms: max_rooms must be positive, not 0\n")


# --- the reference page (docs/reference/cli.md) says what the code does ------------------

CLI_PAGE = (Path(__file__).resolve().parents[1] / "docs" / "reference" / "cli.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", CLI_PAGE, re.MULTILINE | re.DOTALL)


def test_the_pages_config_file_is_one(tmp_path: Path) -> None:
    (example,) = _blocks("toml")
    path = tmp_path / "eventbus.toml"
    path.write_text(example)
    # load() checks every value without importing the app (chat:bus is not here).
    loaded = load(build_parser().parse_args(["serve", "--config", str(path)]),
                                  {})
    assert loaded.options.app == "chat:bus"
    assert loaded.bus["allowed_origins"].value == ("https://chat.example",)
    assert loaded.bus["max_connections"].value is None


def test_the_pages_names_are_the_generated_ones() -> None:
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \| `(EVENTBUS_\w+)` \| `(\w+)` in `\[(\w+)\]` \|$",
                      CLI_PAGE, re.MULTILINE)
    assert len(rows) >= 5
    for name, flag, env, key, table in rows:
        setting = next(s for s in SERVE + BUS if s.name == name)
        assert flag == (f"the `{setting.flag}` argument" if setting.positional
                        else f"`{setting.flag}`")
        assert (env, key, table) == (setting.env, setting.name, setting.table)


def test_the_pages_print_config_is_an_excerpt_of_the_real_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    (console,) = _blocks("console")
    command, *shown = console.splitlines()
    assert command == "$ EVENTBUS_PORT=9000 eventbus serve --print-config --max-rooms 20"
    monkeypatch.setenv("EVENTBUS_PORT", "9000")
    real = [" ".join(line.split()) for line in print_config(capsys, "--max-rooms", "20")
            .splitlines()]
    for line in shown:
        if line != "...":
            assert " ".join(line.split()) in real, line


def test_the_pages_error_lines_are_the_real_ones(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVENTBUS_PING_INTERVAL", "-1")
    printed = [fails(capsys)]
    monkeypatch.delenv("EVENTBUS_PING_INTERVAL")
    Path("eventbus.toml").write_text("[bus]\nmax_rooms = 1.5\n")
    printed.append(fails(capsys, "--config", "eventbus.toml"))
    Path("eventbus.toml").write_text("[bus]\nping_intervall = 3\n")
    printed.append(fails(capsys, "--config", "eventbus.toml"))
    page = next(block for block in _blocks("text") if "eventbus serve: " in block)
    assert page.splitlines() == [f"eventbus serve: {line}" for line in printed]
