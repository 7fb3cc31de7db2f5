"""Where the installed C API lives: headers, the static library and the CMake package config.

The wheel installs the C/C++ core (``csrc/``) into the package folder, so an engine can build
against it without Python at run time::

    cmake -S engine -B build -Dmeshtalk_fast_DIR="$(meshtalk-fast cmake-dir)"
    # CMakeLists.txt: find_package(meshtalk_fast CONFIG REQUIRED)
    #                 target_link_libraries(engine PRIVATE meshtalk_fast::core)

Layout under the package folder: ``include/meshtalk/meshtalk.h`` (the C API) and the C++ headers,
``lib/libmeshtalk_core.a``, ``lib/cmake/meshtalk_fast/meshtalk_fastConfig.cmake``.
"""
from __future__ import annotations

import pathlib

__all__ = ["cmake_dir", "include_dir", "library_dir"]

_PACKAGE = pathlib.Path(__file__).resolve().parents[1]  # the meshtalk_fast folder (this file is in backends/)


def _installed(path: pathlib.Path, what: str) -> str:
    if not path.is_dir():
        raise FileNotFoundError(
            f"{what} {str(path)!r} does not exist: meshtalk_fast at {str(_PACKAGE)!r} was not installed with its "
            "C/C++ files (a source checkout, or an install without the build); `pip install .` installs them")
    return str(path)


def cmake_dir() -> str:
    """The folder holding ``meshtalk_fastConfig.cmake``: pass it as ``-Dmeshtalk_fast_DIR=...`` (or put it on
    ``CMAKE_PREFIX_PATH``) for ``find_package(meshtalk_fast CONFIG REQUIRED)``."""
    path = _PACKAGE / "lib" / "cmake" / "meshtalk_fast"
    _installed(path, "the CMake package folder")
    if not (path / "meshtalk_fastConfig.cmake").is_file():
        raise FileNotFoundError(f"{str(path)!r} holds no meshtalk_fastConfig.cmake: reinstall with `pip install .`")
    return str(path)


def include_dir() -> str:
    """The folder holding ``meshtalk/meshtalk.h`` (for builds without CMake: ``-I``)."""
    return _installed(_PACKAGE / "include", "the include folder")


def library_dir() -> str:
    """The folder holding ``libmeshtalk_core.a`` (for builds without CMake: ``-L ... -lmeshtalk_core -lpthread``)."""
    return _installed(_PACKAGE / "lib", "the library folder")
