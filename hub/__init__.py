"""cryod.hub: the study collector (``cryohub``), every room's record in one study database.

A room (a ``cryod`` node) publishes its chain entries with the rows and
sample batches they cover on the record channel; the collector checks each
message against the room's chain (``ingest``, pure), stores what extends it
(``store``, SQLAlchemy 2 on PostgreSQL or SQLite) and keeps its own changes
in a hash chain of its own (``store.audit``), anchored outside its database
(``anchors``, ``journal``). docs/collector.md is the guide.

It imports ``cryod.integrity`` (the canonical encoding and digests, so it
re-hashes exactly the room's bytes) and ``cryod.research`` (study profiles),
never the daemon, its drivers or the simulator (import-linter contracts in
pyproject.toml). Its third-party dependencies are the ``hub`` extra.

Modules:

- ``messages``: the record channel's message (provisional until the room side
  lands), parsed strictly;
- ``ingest``: the decision for each message (accept, duplicate, gap, fork,
  unregistered, unknown profile, clock skew), pure with injected time;
- ``access``: roles, grants and who may do what (pure);
- ``passwords``: argon2 hashes (the one argon2-cffi import);
- ``config``: the TOML config, validated; secret files must be 0600;
- ``anchors`` and ``journal``: where the collector's own chain head goes;
- ``store``: models, Alembic migrations, the audit chain, rooms, users and
  received entries;
- ``admin``: changes made by a named, authenticated user, each audited;
- ``verify``: the collector's own chain, and its copy of each room's chain;
- ``cli``: ``cryohub``.
"""
