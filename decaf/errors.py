"""Exceptions raised by decaf when a net spec or its inputs are wrong."""


class SpecError(ValueError):
    """A net spec is invalid: unknown layer type or parameter, missing blob, cycle..."""


class ShapeError(ValueError):
    """A blob has the wrong shape for the layer that consumes it."""
