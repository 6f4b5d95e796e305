"""Package layout for setuptools (the metadata is in pyproject.toml).

The experiment configs live at the repository's top level (``configs/``, as ``python train.py
--config=configs/big_lama.py`` expects) and are installed inside the package as ``jaxinpaint.configs``, so that
commands run from any directory find them (``jaxinpaint.config_lib.config_dir``). pyproject.toml alone cannot
map a directory outside the package into it while also discovering the package's subpackages.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["jaxinpaint", "jaxinpaint.*"]) + ["jaxinpaint.configs"],
    package_dir={"jaxinpaint.configs": "configs"},
    package_data={"jaxinpaint.serve": ["page.html"]},  # jaxinpaint serve's page (inline script and style)
)
