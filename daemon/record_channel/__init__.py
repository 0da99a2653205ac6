"""The record channel: the room's chain, entry by entry with what each covers, over
MQTT to the study collector (docs/record-channel.md).

- ``cursor``: what to send next, what counts as delivered (pure);
- ``message``: the record message and its privacy guard (pure);
- ``source``: entries, rows and sample batches read from the store by chain seq;
- ``cursor_file``: the delivered-up-to cursor on disk;
- ``channel``: the asyncio shell (aiomqtt through ``telemetry.publisher``).
"""
