"""Where ``eventbus serve`` gets its settings: flags, the environment, a TOML file.

There are two kinds of settings. Those of the command itself (:class:`ServeOptions`:
the app, the address, TLS, logging, Redis, workers) form the ``[serve]`` table of
the config file; the fields of :class:`~eventbus.ServerConfig` form the ``[bus]``
table. Each setting has one name, and its flag and environment variable follow from
it: ``ping_interval`` is ``--ping-interval``, ``EVENTBUS_PING_INTERVAL`` and
``[bus] ping_interval``. Both tables are read from ``attrs.fields`` of their class,
types and ``#:`` comments included, so that a field added to ``ServerConfig`` is a
setting of the command by itself, with its help text.

Precedence, highest first: a flag, an environment variable, the config file
(``--config PATH``, else ``EVENTBUS_CONFIG``), the app's own ``ServerConfig`` (for
``[bus]`` settings), the default.

Values: a list (``allowed_origins``) is comma-separated in a flag or variable and an
array in TOML; a setting that may be ``None`` takes the word ``none`` (the string
``"none"`` in TOML, which has no null); a boolean is ``true``/``false`` (or ``1``/``0``,
``yes``/``no``, ``on``/``off`` in a variable, and ``--open-rooms``/``--no-open-rooms``
as flags).
"""

from .kinds import Kind
from .sources import Given, Settings, SettingsError, load
from .table import BUS, CONFIG_ENV, SERVE, ServeOptions, Setting, add_arguments

__all__ = [
    "BUS",
    "CONFIG_ENV",
    "SERVE",
    "Given",
    "Kind",
    "ServeOptions",
    "Setting",
    "Settings",
    "SettingsError",
    "add_arguments",
    "load",
]
