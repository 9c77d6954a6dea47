"""The public API: every exported name exists, ``__all__`` lists are tidy, and every
public exception is importable from the top-level package."""

from __future__ import annotations

import re
from types import ModuleType

import pytest

import eventbus
import eventbus.errors
import eventbus.protocol

MODULES = [eventbus, eventbus.protocol, eventbus.errors]


def isort_key(name: str) -> tuple[int, list[tuple[int, int | str]]]:
    """The order ruff's RUF022 keeps ``__all__`` in: SCREAMING_SNAKE_CASE, then
    CamelCase, then everything else; a natural sort within each group."""
    if len(name) > 1 and name.upper() == name and name.lower() != name:
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    chunks = [
        (0, int(chunk)) if chunk.isdigit() else (1, chunk)
        for chunk in re.split(r"(\d+)", name)
        if chunk
    ]
    return group, chunks


def test_isort_key() -> None:
    names = ["helper", "Codec", "MAX_2", "MAX_10", "Ack", "ACK_ID_MAX", "__version__", "v2"]
    assert sorted(names, key=isort_key) == [
        "ACK_ID_MAX", "MAX_2", "MAX_10", "Ack", "Codec", "__version__", "helper", "v2",
    ]


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.__name__)
def test_all_names_exist(module: ModuleType) -> None:
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.__name__)
def test_all_is_sorted_without_duplicates(module: ModuleType) -> None:
    names = list(module.__all__)
    assert all(type(name) is str for name in names)
    assert len(names) == len(set(names))
    assert names == sorted(names, key=isort_key)


def test_every_public_exception_is_exported_from_eventbus() -> None:
    exceptions = {
        name: value
        for name, value in vars(eventbus.errors).items()
        if not name.startswith("_")
        and isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == eventbus.errors.__name__
    }
    assert "EventBusError" in exceptions
    assert "RemoteProtocolError" in exceptions
    for name, cls in exceptions.items():
        assert name in eventbus.__all__, name
        assert getattr(eventbus, name) is cls
        assert name in eventbus.errors.__all__, name


def test_protocol_re_exports_are_the_same_objects() -> None:
    from eventbus.protocol import codec, packets

    for name in eventbus.protocol.__all__:
        value = getattr(eventbus.protocol, name)
        for source in (codec, packets):
            if name in source.__all__:
                assert getattr(source, name) is value, name


def test_version() -> None:
    assert isinstance(eventbus.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", eventbus.__version__)


def test_the_client_package_loads_its_io_layer_on_first_use() -> None:
    import eventbus.client

    assert eventbus.client.Client is eventbus.Client
    assert eventbus.client.Subscription is eventbus.Subscription
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        eventbus.client.nope  # noqa: B018
    import eventbus.asyncio

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        eventbus.asyncio.nope  # noqa: B018
