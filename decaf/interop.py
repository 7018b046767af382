"""Registries through which each layer module owns its mappings to other formats.

A layer module registers, next to its forward and backward, how its type is read from other
frameworks' files; the converters in ``decaf/io/`` only walk a file and ask these tables:

    @onnx_importer("Relu", "LeakyRelu")
    def _relu_from_onnx(imp, node):          # imp: the converter's context (io/onnx_convert.py)
        ...

    @caffe_importer("ReLU")
    def _relu_from_caffe(ctx, layer):        # ctx: the converter's context (io/caffe.py)
        ...

Writing a layer out is a method of the layer class (``Layer.to_onnx``, ``Layer.to_caffe``), so the
type that knows its parameters also knows how to write them. This module imports nothing from
decaf: layers (low) register here, converters (high) read here, and neither imports the other.
"""

ONNX_IMPORTERS = {}    # ONNX op_type -> function(importer, node)
CAFFE_IMPORTERS = {}   # Caffe layer type (V2 name) -> function(context, layer)


def _registrar(table, what):
    def decorator_for(*names):
        def decorator(fn):
            for name in names:
                if name in table:
                    raise ValueError(f"{what} {name!r} is registered twice ({table[name].__module__} and "
                                     f"{fn.__module__})")
                table[name] = fn
            return fn
        return decorator
    return decorator_for


onnx_importer = _registrar(ONNX_IMPORTERS, "ONNX op")
caffe_importer = _registrar(CAFFE_IMPORTERS, "Caffe layer type")
