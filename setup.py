"""Maps the folders to their import names: core/ is ``heron``, plugins/ is ``heron_plugins``.

Everything else lives in pyproject.toml. The package list is computed here because
``[tool.setuptools.packages.find]`` cannot rename a folder, and no top-level ``core`` or
``plugins`` package may land in site-packages.
"""

from setuptools import find_packages, setup

_ROOTS = {"heron": "core", "heron_plugins": "plugins"}

packages = []
for name, folder in _ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=_ROOTS)
