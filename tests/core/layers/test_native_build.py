"""NativeExtension: built once per process, a failed build remembered and re-raised (the compiler is
replaced by a recording stand-in; the real builds are exercised by the kernels' own tests)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch.utils.cpp_extension

from heron.layers.native_build import NativeExtension, cpu_flags_digest


class FakeBuild:
    """Records each ``load`` call; raises ``errors`` in turn, then returns a module."""

    def __init__(self, *errors: Exception) -> None:
        self.calls: list[dict] = []
        self.errors = list(errors)

    def __call__(self, **kw):
        self.calls.append(kw)
        if self.errors:
            raise self.errors.pop(0)
        return types.ModuleType(kw["name"])


def test_builds_once_with_its_arguments(monkeypatch):
    fake = FakeBuild()
    monkeypatch.setattr(torch.utils.cpp_extension, "load", fake)
    names = []

    def name() -> str:
        names.append(1)
        return "heron_test_ext_abc"

    ext = NativeExtension(name, [Path("/src/a.cpp"), Path("/src/b.cpp")], ["-O3"], openmp=True)
    assert names == []  # the name is computed at the first build, not at import
    first = ext.load()
    assert ext.load() is first and ext.module is first and first.__name__ == "heron_test_ext_abc"
    assert len(fake.calls) == 1 and names == [1]
    assert fake.calls[0] == {"name": "heron_test_ext_abc", "sources": ["/src/a.cpp", "/src/b.cpp"],
                             "extra_cflags": ["-O3"], "extra_ldflags": ["-fopenmp"], "verbose": False}
    plain = NativeExtension("heron_test_plain", [Path("/src/c.cpp")], [])
    plain.load()
    assert fake.calls[1]["extra_ldflags"] == [] and fake.calls[1]["name"] == "heron_test_plain"


def test_a_failed_build_is_raised_again_without_rebuilding(monkeypatch):
    boom = RuntimeError("Error building extension 'x': no compiler")
    fake = FakeBuild(boom)
    monkeypatch.setattr(torch.utils.cpp_extension, "load", fake)
    ext = NativeExtension("heron_test_fail", [Path("/src/a.cpp")], [])
    for _ in range(3):
        with pytest.raises(RuntimeError) as info:
            ext.load()
        assert info.value is boom
    assert len(fake.calls) == 1 and ext.error is boom and ext.module is None
    ext.reset()  # e.g. a compiler installed since: the next load tries again
    assert ext.load().__name__ == "heron_test_fail" and len(fake.calls) == 2 and ext.error is None


def test_cpu_flags_digest():
    a = cpu_flags_digest()
    assert len(a) == 10 and int(a, 16) >= 0
    assert cpu_flags_digest() == a  # stable within a machine
    assert cpu_flags_digest(b"-O3", b"source") != a
    assert cpu_flags_digest(b"-O3", b"source") == cpu_flags_digest(b"-O3source")  # the parts are concatenated
