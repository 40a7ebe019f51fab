"""Build script: declares the Cython extension only; metadata lives in pyproject.toml."""
import glob
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# every nncodec_ext/_NAME.pyx becomes the extension module nncodec_ext._NAME
extensions = [
    Extension(
        "nncodec_ext." + os.path.splitext(os.path.basename(pyx))[0],
        [pyx],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
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
