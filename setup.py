"""Build decaf's compiled kernels (csrc/*.c behind a Cython wrapper) with OpenMP."""
import glob

from Cython.Build import cythonize
from setuptools import Extension, setup

kernels = Extension(
    "decaf.kernels._compiled",
    sources=["decaf/kernels/_compiled.pyx"] + sorted(glob.glob("csrc/*.c")),
    include_dirs=["csrc"],
    # -march=native: the extension is built on the machine that runs it (pip install .).
    extra_compile_args=["-O3", "-march=native", "-fopenmp", "-std=c99", "-fno-math-errno"],
    extra_link_args=["-fopenmp"],
)

setup(ext_modules=cythonize([kernels], language_level=3))
