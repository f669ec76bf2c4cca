"""clustercam: explaining CNNs through clustering."""
__version__ = "0.1.0"
