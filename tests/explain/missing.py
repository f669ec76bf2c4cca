"""Make an optional package look uninstalled, for the "clear ImportError" tests."""

import builtins


def hide_package(monkeypatch, package: str) -> None:
    """Every ``import <package>...`` raises ImportError while the test runs."""
    real = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.split(".")[0] == package:
            raise ImportError(f"No module named {package!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
