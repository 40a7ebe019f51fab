"""Build script: declares the Cython extension only; metadata lives in pyproject.toml."""
import glob
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# every nncodec_ext/_NAME.pyx becomes the extension module nncodec_ext._NAME
# The coder's hot loops are many small `cdef inline` functions; GCC, left to itself, keeps some
# of them out of line (the per-bin coding step, the per-(K, dq) copies of the decoder loop), which
# puts the coder state in memory. In these modules Cython's inline marker forces inlining.
FORCE_INLINE = {"_cabac"}


def _macros(name):
    macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    if name in FORCE_INLINE:
        macros.append(("CYTHON_INLINE", "__inline__ __attribute__((always_inline))"))
    return macros


extensions = [
    Extension(
        "nncodec_ext." + os.path.splitext(os.path.basename(pyx))[0],
        [pyx],
        include_dirs=[np.get_include()],
        define_macros=_macros(os.path.splitext(os.path.basename(pyx))[0]),
        extra_compile_args=["-O3", "-ffp-contract=off"],  # no fused multiply-add: the
        # trellis must take the same decisions as its pure-Python twin
    )
    for pyx in sorted(glob.glob("nncodec_ext/_*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    ),
)
