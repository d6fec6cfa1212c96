class ConfigError(Exception):
    """Bad configuration or an unreachable dependency at start-up: one line, non-zero exit."""
