"""CaffeNet (the DeCAF network) and AlexNet (Caffe's bvlc_alexnet).

Geometry from ../shared/facts/models.md. Both take 227x227 RGB input and
differ only in the order of pooling and LRN. Blob names: ``fc6``/``fc7`` are
the inner-product outputs *before* ReLU, ``relu6``/``relu7`` after it
(which one to call DeCAF6/7 is discussed in docs/features.md).
"""


# Caffe's multipliers for (weight, bias): biases learn twice as fast, no decay
_CAFFE_MULTIPLIERS = {"lr_mult": [1, 2], "decay_mult": [1, 0]}


def _conv(name, bottom, k, kernel, stride=1, pad=0, group=1):
    return {"name": name, "type": "Convolution", "bottom": bottom, "top": name, "num_output": k,
            "kernel_size": kernel, "stride": stride, "pad": pad, "group": group,
            "weight_filler": {"type": "gaussian", "std": 0.01}, **_CAFFE_MULTIPLIERS}


def _relu(name, bottom):
    return {"name": name, "type": "ReLU", "bottom": bottom, "top": name}


def _pool(name, bottom):
    return {"name": name, "type": "Pooling", "bottom": bottom, "top": name, "pool": "max",
            "kernel_size": 3, "stride": 2}


def _lrn(name, bottom):
    return {"name": name, "type": "LRN", "bottom": bottom, "top": name,
            "local_size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0}


def _fc(name, bottom, n):
    return {"name": name, "type": "InnerProduct", "bottom": bottom, "top": name, "num_output": n,
            "weight_filler": {"type": "gaussian", "std": 0.005}, **_CAFFE_MULTIPLIERS}


def _net(name, lrn_first, num_classes, with_loss, input_size):
    layers = []
    # stages 1 and 2: conv -> relu -> (pool, lrn) in the model's order
    bottom = "data"
    for i, (k, kernel, stride, pad, group) in enumerate([(96, 11, 4, 0, 1), (256, 5, 1, 2, 2)], start=1):
        layers += [_conv(f"conv{i}", bottom, k, kernel, stride, pad, group), _relu(f"relu{i}", f"conv{i}")]
        if lrn_first:
            layers += [_lrn(f"norm{i}", f"relu{i}"), _pool(f"pool{i}", f"norm{i}")]
            bottom = f"pool{i}"
        else:
            layers += [_pool(f"pool{i}", f"relu{i}"), _lrn(f"norm{i}", f"pool{i}")]
            bottom = f"norm{i}"
    layers += [_conv("conv3", bottom, 384, 3, pad=1), _relu("relu3", "conv3"),
               _conv("conv4", "relu3", 384, 3, pad=1, group=2), _relu("relu4", "conv4"),
               _conv("conv5", "relu4", 256, 3, pad=1, group=2), _relu("relu5", "conv5"),
               _pool("pool5", "relu5"),
               _fc("fc6", "pool5", 4096), _relu("relu6", "fc6"),
               {"name": "drop6", "type": "Dropout", "bottom": "relu6", "top": "relu6", "dropout_ratio": 0.5},
               _fc("fc7", "relu6", 4096), _relu("relu7", "fc7"),
               {"name": "drop7", "type": "Dropout", "bottom": "relu7", "top": "relu7", "dropout_ratio": 0.5},
               _fc("fc8", "relu7", num_classes)]
    layers[-1]["weight_filler"] = {"type": "gaussian", "std": 0.01}
    inputs = {"data": [3, input_size, input_size]}
    if with_loss:
        inputs["label"] = []
        layers.append({"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["fc8", "label"], "top": "loss"})
    else:
        layers.append({"name": "prob", "type": "Softmax", "bottom": "fc8", "top": "prob"})
    return {"name": name, "inputs": inputs, "layers": layers}


def caffenet(num_classes=1000, with_loss=False, input_size=227):
    """CaffeNet: conv -> relu -> pool -> LRN in stages 1 and 2."""
    return _net("caffenet", False, num_classes, with_loss, input_size)


def alexnet(num_classes=1000, with_loss=False, input_size=227):
    """AlexNet (bvlc_alexnet): conv -> relu -> LRN -> pool in stages 1 and 2."""
    return _net("alexnet", True, num_classes, with_loss, input_size)
