"""Exceptions raised by decaf when a net spec or its inputs are wrong."""


class SpecError(ValueError):
    """A net spec is invalid: unknown layer type or parameter, missing blob, cycle..."""


class ShapeError(ValueError):
    """A blob has the wrong shape for the layer that consumes it."""


class ConfigError(ValueError):
    """An environment variable that configures decaf (DECAF_ISA, DECAF_NUM_THREADS, DECAF_BACKEND)
    has a value decaf cannot use; raised when decaf is imported."""


class ConfigRuntimeError(RuntimeError):
    """A configuration this machine cannot run (DECAF_ISA naming an instruction set the CPU lacks)."""
