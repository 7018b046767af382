"""The model zoo: functions returning net specs (plain data)."""
from . import resnet
from .caffenet import alexnet, caffenet
from .efficientnet import efficientnet_lite0, efficientnet_lite1, efficientnet_lite2
from .lenet import lenet

ZOO = {"caffenet": caffenet, "alexnet": alexnet, "lenet": lenet, "efficientnet_lite0": efficientnet_lite0,
       "efficientnet_lite1": efficientnet_lite1, "efficientnet_lite2": efficientnet_lite2}

# torchvision's families (decaf.models.torchlayout): arch -> (function(**options) -> Builder, the
# classifier's state-dict key). Their zoo names are the arch names, but torchvision's AlexNet is
# "torchvision_alexnet" (the zoo's "alexnet" is Caffe's).
TORCH_FAMILIES = {}
for _family in (resnet,):
    for _arch, _build in _family.BUILDERS.items():
        TORCH_FAMILIES[_arch] = (_build, _family.CLASSIFIERS[_arch])
    for _name, _make in _family.ZOO.items():
        ZOO.setdefault(_name, _make)


def get_spec(name, **kw):
    if name not in ZOO:
        raise KeyError(f"unknown model {name!r}; the zoo has {sorted(ZOO)}")
    return ZOO[name](**kw)
