"""The abuse suite: floods from one abusive client against a live eventbus server.

Run it with ``python3 benchmarks/abuse.py`` (see that file, and docs/abuse.md).
Standard library only; the server runs from the project's venv.

- :mod:`.wire`: the WebSocket handshake and frames, by hand;
- :mod:`.floods`: the abusive clients, one per scenario;
- :mod:`.bystander`: the bystander and the newcomer probe;
- :mod:`.runner`: one scenario against a fresh server, and the goals;
- :mod:`.verdict`: PASS/FAIL and the table;
- :mod:`.cli`: the command line.
"""
