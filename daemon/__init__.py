"""Console-side daemon: engine, supervisor, service, log, control and telemetry."""
