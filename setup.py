"""Build of the compiled part: ``parsers._dumpscan`` (see parsers/_dumpscan.c).

Everything else about the package is in pyproject.toml. The extension needs
only Python's own headers (no numpy, no torch), POSIX threads and a C
compiler with ``unsigned __int128`` (gcc or clang).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "parsers._dumpscan",
            sources=["parsers/_dumpscan.c"],
            depends=["parsers/_pow5_table.h"],
            extra_compile_args=["-pthread"],
            extra_link_args=["-pthread"],
        )
    ]
)
