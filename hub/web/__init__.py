"""The study's web app (``cryohub web``): rooms board, procedures, follow-up forms, audit.

Its own process on the collector's database, bound to loopback by default
(docs/web.md). It never controls a console: MQTT is subscribed to, never
published on, and nothing here writes a room's record.

- ``scope``, ``throttle``, ``sessions``, ``board``, ``plot``: pure (time injected);
- ``records``: procedures, cycles, alarms and samples from the received rows;
- ``telemetry``: the board's MQTT subscription (the only aiomqtt import here);
- ``pages``: what every route handler needs (``PageContext``: settings, the viewer,
  CSRF, rendering, the subject-read audit);
- ``login_pages``, ``board_pages``, ``procedure_pages``, ``followup_pages`` (the due
  list and the follow-up forms), ``audit_pages``, ``account_pages``: the routes,
  one module per group of pages (``…_routes(ctx)``);
- ``app``: the Starlette application (assembles the routes; security headers);
- ``server``: runs it under uvicorn.
"""
