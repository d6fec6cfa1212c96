class TrainerError(Exception):
    """A user-facing problem (bad data, bad path, bad model): the CLI prints it as one line."""
