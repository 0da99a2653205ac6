"""MQTT telemetry out: topic tree, payload builders, config, and the publisher.

Only ``publisher`` imports aiomqtt; ``payloads`` and ``config`` are pure, so
the daemon can build and validate without a broker. MQTT is out only: the
daemon subscribes to nothing, so no topic can move a valve.
"""

from .config import MqttConfig, MqttConfigError, load_mqtt_config
from .payloads import PREFIX, SCHEMA, PersonalDataError, Topics

__all__ = [
    "PREFIX",
    "SCHEMA",
    "MqttConfig",
    "MqttConfigError",
    "PersonalDataError",
    "Topics",
    "load_mqtt_config",
]
