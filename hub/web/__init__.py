"""The study's web app (``cryohub web``): read-only rooms board, procedures, audit.

Its own process on the collector's database, bound to loopback by default
(docs/web.md). It never controls a console: MQTT is subscribed to, never
published on, and nothing here writes a room's record.

- ``scope``, ``throttle``, ``sessions``, ``board``, ``plot``: pure (time injected);
- ``records``: procedures, cycles, alarms and samples from the received rows;
- ``telemetry``: the board's MQTT subscription (the only aiomqtt import here);
- ``app``: the Starlette application (routes, security headers, CSRF);
- ``server``: runs it under uvicorn.
"""
