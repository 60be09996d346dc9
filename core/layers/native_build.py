"""C++ extensions built on first use with ``torch.utils.cpp_extension``, once per process.

heron's compiled pieces (the fused element-wise ops, the native Llama stack, and plugins' kernels
such as the paged attention and GGUF kernels) each hold one :class:`NativeExtension`. Its
:meth:`~NativeExtension.load` builds the module on the first call (later processes load it from
torch's extension cache, ~/.cache/torch_extensions, which rebuilds when the sources or flags
change) and returns the same module from then on. A failed build is remembered and re-raised, so a
missing compiler costs one attempt per process, not one per layer or per ``supports`` call.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

__all__ = ("NativeExtension", "cpu_flags_digest")


def cpu_flags_digest(*extra: bytes) -> str:
    """A short digest of this CPU's feature flags (and ``extra``): part of the name of a
    ``-march=native`` build, so a build cached in a shared home directory is only loaded on a CPU
    that has its instructions."""
    try:
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    return hashlib.sha1(flags.encode() + b"".join(extra)).hexdigest()[:10]


class NativeExtension:
    """One C++ extension module, built on the first :meth:`load`.

    Args:
        name: the module's name, or a function giving it (called at the first build: e.g. a name
            that carries :func:`cpu_flags_digest`).
        sources: the C++ files (all of them, also those only included by another: torch rebuilds
            when any listed file changes).
        cflags: compiler flags.
        openmp: link with ``-fopenmp``.
    """

    def __init__(self, name: str | Callable[[], str], sources: Sequence[Path], cflags: Sequence[str], *,
                 openmp: bool = False) -> None:
        self.name = name
        self.sources = tuple(sources)
        self.cflags = list(cflags)
        self.openmp = openmp
        self.module: ModuleType | None = None
        #: the exception of the failed build, re-raised by every later :meth:`load`
        self.error: Exception | None = None
        self._lock = threading.Lock()

    def load(self) -> ModuleType:
        """The compiled module (built on the first call). Raises the build's error, every time."""
        if self.module is not None:
            return self.module
        with self._lock:
            if self.module is None:
                if self.error is not None:
                    raise self.error
                # slow to import (it pulls in setuptools): only when building
                from torch.utils.cpp_extension import load

                try:
                    self.module = load(name=self.name() if callable(self.name) else self.name,
                                       sources=[str(s) for s in self.sources], extra_cflags=self.cflags,
                                       extra_ldflags=["-fopenmp"] if self.openmp else [], verbose=False)
                except Exception as err:
                    self.error = err
                    raise
        return self.module

    def reset(self) -> None:
        """Forget the module and any failed build: the next :meth:`load` builds (or loads) again."""
        with self._lock:
            self.module, self.error = None, None
