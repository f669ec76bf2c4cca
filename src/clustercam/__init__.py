"""clustercam: explaining CNNs through clustering."""
# the one version number: pyproject.toml reads it from here ([tool.setuptools.dynamic])
__version__ = "0.2.0"
