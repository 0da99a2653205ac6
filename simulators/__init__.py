"""The software cryoablation console: physics, console safety and wire protocols."""
