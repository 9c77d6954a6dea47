"""Which rooms keep how much history: the default bounds, ``history_rooms`` rules
(first match wins), and clear errors for rules that cannot be read, from the app's
settings and from ``eventbus serve``'s flags and environment alike."""

from __future__ import annotations

import pytest

from eventbus import ServerConfig
from eventbus.adapters import HistoryBounds
from eventbus.cli import build_parser
from eventbus.server.history import HistoryPolicy, parse_rule
from eventbus.settings import SettingsError, load


def test_rules_match_whole_names_in_order_and_fall_back_to_the_default() -> None:
    policy = HistoryPolicy(1000, 120.0, 1 << 20, [
        "game.*=off", "audit.*=10000/3600", "big.*=5/60/99", "*.tmp=off"])
    assert policy.default == HistoryBounds(1000, 120.0, 1 << 20)
    assert policy.bounds("game.42") is None
    assert policy.bounds("audit.login") == HistoryBounds(10000, 3600.0, 1 << 20)
    assert policy.bounds("big.x") == HistoryBounds(5, 60.0, 99)
    assert policy.bounds("chat.tmp") is None
    assert policy.bounds("chat") == policy.default
    assert policy.bounds("the.game.1") == policy.default, "a pattern matches the whole name"
    assert policy.bounds("game.42") is None, "answered again from the cache"


def test_no_history_by_default_with_size_0_but_rules_still_apply() -> None:
    policy = HistoryPolicy(0, 120.0, 1000, ["keep.*=10/5"])
    assert policy.default is None
    assert policy.bounds("other") is None
    assert policy.bounds("keep.me") == HistoryBounds(10, 5.0, 1000)


def test_the_cache_of_bounds_is_bounded() -> None:
    policy = HistoryPolicy(10, 1.0, 10)
    for n in range(5000):
        assert policy.bounds(f"room-{n}") == policy.default
    assert len(policy._cache) <= 4096


@pytest.mark.parametrize(("rule", "says"), [
    ("game.*", "write PATTERN=off or PATTERN=SIZE/AGE"),
    ("=off", "write PATTERN=off"),
    ("a=10", "after '=', write off or SIZE/AGE"),
    ("a=ten/5", "after '=', write off or SIZE/AGE"),
    ("a=1/2/3/4", "after '=', write off or SIZE/AGE"),
    ("a=10,60", "after '=', write off or SIZE/AGE"),
    ("a=0/60", "must be positive"),
    ("a=10/0", "must be positive"),
    ("a=10/nan", "must be positive"),
    ("a=10/60/0", "a room that keeps nothing: PATTERN=off"),
])
def test_a_rule_that_cannot_be_read_is_an_error_naming_it(rule: str, says: str) -> None:
    with pytest.raises(ValueError, match=f"history rule {rule!r}") as error:
        parse_rule(rule)
    assert says in str(error.value)
    with pytest.raises(ValueError, match="history rule"):
        ServerConfig(history_rooms=[rule])


def test_rules_with_bounds_can_be_given_as_a_flag_and_in_the_environment() -> None:
    rules = "game.*=off,audit.*=10000/3600"
    for args, environ in ((["serve", "--history-rooms", rules], {}),
                          (["serve"], {"EVENTBUS_HISTORY_ROOMS": rules})):
        settings = load(build_parser().parse_args(args), environ)
        config, _ = settings.bus_config(ServerConfig())
        assert config.history_rooms == ("game.*=off", "audit.*=10000/3600")
    with pytest.raises(SettingsError, match=r"history rule 'audit\.\*=10000'"):
        load(build_parser().parse_args(["serve", "--history-rooms", "audit.*=10000"]), {})
