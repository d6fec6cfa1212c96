class ConfigError(Exception):
    """Bad configuration or an unreachable dependency at start-up: one line, non-zero exit."""


class FatalStop(Exception):
    """Continuing would lose data (e.g. the dead-letter topic refuses a message): stop, commit nothing more."""
