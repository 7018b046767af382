"""Every layer family; importing this package registers all layer types."""
from . import activation, conv, dropout, eltwise, linear, loss, lrn, norm, pool, shape, softmax  # noqa: F401
