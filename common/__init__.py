"""cryod.common: the few helpers every layer shares (daemon, drivers, simulators,
research, integrity, the collector). It imports nothing of cryod, so any package
may import it (an import-linter contract keeps it so). Modules (one job each):

- ``validation``: a pydantic validation error as file, key and reason.
- ``jsonlines``: one JSON request and its JSON answer on a local stream socket.
"""
