"""The model zoo: functions returning net specs (plain data)."""
from .caffenet import alexnet, caffenet
from .efficientnet import efficientnet_lite0, efficientnet_lite1, efficientnet_lite2
from .lenet import lenet

ZOO = {"caffenet": caffenet, "alexnet": alexnet, "lenet": lenet, "efficientnet_lite0": efficientnet_lite0,
       "efficientnet_lite1": efficientnet_lite1, "efficientnet_lite2": efficientnet_lite2}


def get_spec(name, **kw):
    if name not in ZOO:
        raise KeyError(f"unknown model {name!r}; the zoo has {sorted(ZOO)}")
    return ZOO[name](**kw)
