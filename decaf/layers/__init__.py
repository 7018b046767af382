"""Every layer family; importing this package registers all layer types.

Each module of this package is imported here, so a new layer type is one new module: its class
registers itself (``@register``), and its format mappings (``@onnx_importer``, ``to_onnx``,
``to_caffe``) come with it.
"""
import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
