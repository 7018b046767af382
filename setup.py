"""Build decaf's compiled kernels (csrc/*.c behind a Cython wrapper) with OpenMP, portably.

No -march=native: a wheel built here runs on any x86-64 machine. The generic code (the Cython
wrapper, the dispatch, the thread and BLAS state) is built for the x86-64 baseline. The kernel
sources are built once per instruction set variant, each with its flags and a name suffix
(csrc/isa.h), and linked into the same extension; csrc/dispatch.c picks one at import (CPUID, or
$DECAF_ISA through decaf.cpu). On other architectures only the generic variant is built.
"""
import glob
import os
import platform

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.modified import newer_group

# every object of the extension (no -march / -mtune: the x86-64 baseline, tuned generically)
BASE_FLAGS = ["-O3", "-fopenmp", "-std=c99", "-fno-math-errno"]

# The kernel sources compiled once per variant; the other csrc/*.c files are shared, built once.
ISA_KERNEL_SOURCES = ["csrc/batchnorm.c", "csrc/channel_affine.c", "csrc/conv.c", "csrc/depthwise.c",
                      "csrc/direct_conv.c", "csrc/elementwise.c", "csrc/gemm.c", "csrc/grouped_conv.c",
                      "csrc/im2col.c", "csrc/layernorm.c", "csrc/lrn.c", "csrc/pointwise.c", "csrc/pool.c",
                      "csrc/stem_conv.c", "csrc/winograd.c"]
SHARED_SOURCES = sorted(set(glob.glob("csrc/*.c")) - set(ISA_KERNEL_SOURCES))

# variant name -> extra flags (its functions get the suffix _<name>)
X86_VARIANTS = {
    "generic": [],
    "avx2": ["-mavx2", "-mfma"],
    "avx512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq"],
}


def isa_variants():
    """The variants this machine's compiler builds: all three for x86-64, else the generic one."""
    if platform.machine().lower() in ("x86_64", "amd64", "i686", "i386"):
        return dict(X86_VARIANTS)
    return {"generic": []}


class build_isa_ext(build_ext):
    """build_ext that first compiles ISA_KERNEL_SOURCES once per variant (in their own folders of
    build_temp, so the objects do not collide) and links those objects into the extension."""

    def build_extension(self, ext):
        ext_path = self.get_ext_fullpath(ext.name)
        up_to_date = not self.force and not newer_group(ext.sources + ext.depends, ext_path, "newer")
        if ext.name == kernels.name and not up_to_date:
            objects = []
            for name, flags in isa_variants().items():
                objects += self.compiler.compile(
                    ISA_KERNEL_SOURCES, output_dir=os.path.join(self.build_temp, f"isa-{name}"),
                    macros=[("DECAF_ISA_SUFFIX", f"_{name}")], include_dirs=ext.include_dirs,
                    extra_postargs=BASE_FLAGS + flags, depends=ext.depends)
            ext.extra_objects = [o for o in ext.extra_objects if "isa-" not in o] + objects
        super().build_extension(ext)


kernels = Extension(
    "decaf.kernels._compiled",
    sources=["decaf/kernels/_compiled.pyx"] + SHARED_SOURCES,
    include_dirs=["csrc"],
    depends=sorted(glob.glob("csrc/*.h") + ISA_KERNEL_SOURCES),
    define_macros=[(f"DECAF_BUILT_{name.upper()}", "1") for name in isa_variants() if name != "generic"],
    extra_compile_args=BASE_FLAGS,
    extra_link_args=["-fopenmp"],
)

if __name__ == "__main__":   # (setuptools runs this file as __main__; tests read it for the flags)
    from Cython.Build import cythonize   # a build requirement (pyproject.toml), not needed to read the flags

    setup(ext_modules=cythonize([kernels], language_level=3), cmdclass={"build_ext": build_isa_ext})
