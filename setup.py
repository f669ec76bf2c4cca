"""The package list, and the top-level conf/ mapped into the wheel as clustercam/conf.

Everything else is in pyproject.toml. conf/ stays at the top of the checkout (where Hydra
users expect it); the wheel carries the same files so an installed clustercam runs from any
folder (clustercam.runtime.configs finds them).
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages("src"), "clustercam.conf"],
    package_dir={"": "src", "clustercam.conf": "conf"},
)
