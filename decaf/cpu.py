"""The one owner of which instruction set variant of the compiled kernels runs, and what the CPU is.

The extension holds every kernel in up to three variants (csrc/isa.h): ``generic`` (the x86-64
baseline, SSE2), ``avx2`` (AVX2 + FMA) and ``avx512`` (AVX-512 F/BW/VL/DQ). The best one this CPU
runs is chosen when this module is imported (``import decaf`` does), unless ``DECAF_ISA`` names one:

    DECAF_ISA=generic decaf profile caffenet     # or avx2, avx512; auto (or unset): the best

A name this build or CPU lacks is refused with an error saying what the CPU supports; an unknown
name too. ``set_isa`` changes the variant later (tests, benchmarks); a convolution plan keeps the
variant it was made for, so a switch between a layer's setup and its forward cannot mix them.
The NumPy reference backend has no variants: the choice only matters to the compiled kernels.
"""
import os
import platform

from .errors import ConfigError, ConfigRuntimeError
from .kernels import _compiled

ISAS = ("generic", "avx2", "avx512")

# the CPU flags (as /proc/cpuinfo names them) that say which variants and BLAS kernels can run
_FLAGS_OF_INTEREST = ("sse2", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                      "avx512dq", "avx512cd", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "sve")


def _need_compiled():
    if _compiled is None:
        raise RuntimeError("the compiled kernels are not available, so there is no instruction set variant "
                           "to choose (the NumPy backend runs)")


def _checked_name(name):
    name = str(name).strip().lower()
    if name not in ISAS:
        raise ValueError(f"unknown instruction set {name!r}; choose one of {', '.join(ISAS)} (or auto)")
    return name


def supported_isas():
    """The variants this build holds and this CPU runs, worst first (() without compiled kernels)."""
    return tuple(n for n in ISAS if _compiled is not None and _compiled.isa_supported(n))


def best_isa():
    """The variant chosen when DECAF_ISA is unset (None without compiled kernels)."""
    return _compiled.isa_best() if _compiled is not None else None


def get_isa():
    """The variant the compiled kernels run now (None without compiled kernels)."""
    return _compiled.isa_current() if _compiled is not None else None


def set_isa(name):
    """Run the kernels' `name` variant from now on ("auto": the best). ValueError for an unknown
    name, RuntimeError for one this build or CPU lacks."""
    _need_compiled()
    name = best_isa() if str(name).strip().lower() == "auto" else _checked_name(name)
    if name not in supported_isas():
        lacks = "this build does not include it" if name not in _compiled.isa_variants() else \
            f"this CPU ({cpu_model()}) lacks {', '.join(_missing_flags(name)) or 'it'}"
        raise RuntimeError(f"cannot run the {name} kernels: {lacks}; supported here: "
                           f"{', '.join(supported_isas())}")
    _compiled.isa_select(name)


def _missing_flags(name):
    """The CPU flags the variant needs that /proc/cpuinfo does not list (best effort)."""
    need = {"generic": (), "avx2": ("avx2", "fma"),
            "avx512": ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq")}[name]
    have = set(_cpuinfo().get("flags", "").split())
    return [f for f in need if f not in have] if have else list(need)


def _cpuinfo():
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    if "features" in fields and "flags" not in fields:   # ARM's name for them
        fields["flags"] = fields["features"]
    return fields


def cpu_model():
    """The CPU's model name (e.g. "AMD EPYC 9R14"), or what the platform module knows."""
    info = _cpuinfo()
    return info.get("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags():
    """The CPU's instruction set flags that matter to decaf's kernels and its BLAS."""
    have = set(_cpuinfo().get("flags", "").split())
    return [f for f in _FLAGS_OF_INTEREST if f in have]


def isa_info():
    """Everything above as one dict (decaf info prints it)."""
    info = _cpuinfo()
    return {"cpu": cpu_model(), "machine": platform.machine(),
            "family": info.get("cpu family"), "model": info.get("model"),
            "flags": cpu_flags(), "built": list(_compiled.isa_variants()) if _compiled is not None else [],
            "supported": list(supported_isas()), "best": best_isa(), "isa": get_isa(),
            "forced": os.environ.get("DECAF_ISA", "").strip() or None}


def _from_environment():
    value = os.environ.get("DECAF_ISA", "").strip()
    if not value or value.lower() == "auto":
        return
    try:
        name = _checked_name(value)
    except ValueError:
        raise ConfigError(f"DECAF_ISA={value!r} is not one of {', '.join(ISAS)} or auto") from None
    if _compiled is None:   # nothing to choose: decaf.kernels warns that the NumPy kernels run
        return
    try:
        set_isa(name)
    except RuntimeError as error:
        raise ConfigRuntimeError(f"DECAF_ISA={value!r}: {error}") from None


_from_environment()
