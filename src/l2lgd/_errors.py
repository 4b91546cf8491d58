"""The errors a meta-training run raises on purpose (light: the command line imports them
before JAX)."""


class NonFiniteError(RuntimeError):
    """Too many consecutive meta-steps had a non-finite meta-loss or meta-gradient."""


class Stopped(Exception):
    """The run was stopped by SIGINT or SIGTERM at a chunk boundary."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class RunLocked(RuntimeError):
    """Another process is writing the run folder."""


class Mismatch(ValueError):
    """What is stored (a snapshot's config, shapes or family) is intact but is not what was asked
    for: refused, never set aside as damaged."""
