"""A griffe extension for the API reference: reads clustercam's docstrings as written.

- ``Example:`` (the singular, as the docstrings spell it) is read as Google style's
  ``Examples:`` section, so the doctests render as code (griffe treats the singular as a
  plain admonition, whose ``>>>`` lines would render as Markdown).
- Sphinx roles (``:func:`~clustercam.explain.grad_ceam```) render as code: ``grad_ceam``.
- A package that exports a function under the name of the module defining it
  (``clustercam.explain.gradceam`` exports ``cardinality`` from ``.cardinality``) exports the
  function, as at run time; griffe would otherwise document the module under that name.

The sources stay plain Google style; only the rendering changes.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)
_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj|const):`(~?)([^`]+)`")


def _role(match: re.Match) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


def _modules(module: griffe.Module):
    yield module
    for sub in module.modules.values():
        if not sub.is_alias:
            yield from _modules(sub)


class ClustercamDocstrings(griffe.Extension):
    """Rewrite each docstring once, when griffe has loaded its object; fix shadowed exports."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(_role, text)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for module in _modules(pkg):
            for name in module.exports or ():
                member = module.members.get(str(name))
                if member is None or not member.is_alias:
                    continue
                try:
                    target = member.final_target
                except griffe.AliasResolutionError:
                    continue
                inner = target.members.get(str(name)) if target.is_module else None
                if inner is not None and not inner.is_module:
                    module.set_member(str(name), griffe.Alias(str(name), inner, parent=module))
