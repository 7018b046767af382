"""A small LeNet for 1-channel images (MNIST-like 28x28 or scikit-learn's 8x8 digits)."""


def lenet(num_classes=10, input_shape=(1, 28, 28), with_loss=True, channels=(20, 50), hidden=500):
    c1, c2 = channels
    small = input_shape[1] < 16    # 8x8 digits: 3x3 kernels with padding keep the maps usable
    k, pad = (3, 1) if small else (5, 0)
    layers = [
        {"name": "conv1", "type": "Convolution", "bottom": "data", "top": "conv1", "num_output": c1,
         "kernel_size": k, "pad": pad, "weight_filler": {"type": "msra"}},
        {"name": "relu1", "type": "ReLU", "bottom": "conv1", "top": "conv1"},
        {"name": "pool1", "type": "Pooling", "bottom": "conv1", "top": "pool1", "pool": "max",
         "kernel_size": 2, "stride": 2},
        {"name": "conv2", "type": "Convolution", "bottom": "pool1", "top": "conv2", "num_output": c2,
         "kernel_size": k, "pad": pad, "weight_filler": {"type": "msra"}},
        {"name": "relu2", "type": "ReLU", "bottom": "conv2", "top": "conv2"},
        {"name": "pool2", "type": "Pooling", "bottom": "conv2", "top": "pool2", "pool": "max",
         "kernel_size": 2, "stride": 2},
        {"name": "ip1", "type": "InnerProduct", "bottom": "pool2", "top": "ip1", "num_output": hidden,
         "weight_filler": {"type": "msra"}},
        {"name": "relu3", "type": "ReLU", "bottom": "ip1", "top": "ip1"},
        {"name": "ip2", "type": "InnerProduct", "bottom": "ip1", "top": "ip2", "num_output": num_classes},
    ]
    inputs = {"data": list(input_shape)}
    if with_loss:
        inputs["label"] = []
        layers.append({"name": "loss", "type": "SoftmaxWithLoss", "bottom": ["ip2", "label"], "top": "loss"})
    else:
        layers.append({"name": "prob", "type": "Softmax", "bottom": "ip2", "top": "prob"})
    return {"name": "lenet", "inputs": inputs, "layers": layers}
