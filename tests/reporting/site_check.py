"""Reading a written page back: its images and links, as a browser would resolve them."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote


class Refs(HTMLParser):
    """Every ``<img src>``, ``<a href>``, external script or style sheet, and summary text."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.external: list[str] = []
        self.summaries: list[str] = []
        self.headers: list[str] = []
        self.cells: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a["src"] or "")
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        elif tag in ("script", "link") and (a.get("src") or a.get("href")):
            self.external.append(a.get("src") or a.get("href") or "")
        if tag in ("summary", "th", "td"):
            self._in, self._text = tag, ""

    def handle_data(self, data: str) -> None:
        if self._in:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            {"summary": self.summaries, "th": self.headers, "td": self.cells}[tag].append(self._text.strip())
            self._in = None


def read(index: Path) -> Refs:
    refs = Refs()
    refs.feed(index.read_text(encoding="utf-8"))
    return refs


def unresolved(index: Path, root: Path) -> list[str]:
    """The images and links of ``index`` that name no file inside ``root`` (in-page anchors
    aside)."""
    refs, bad = read(index), []
    for ref in refs.images + refs.links:
        if ref.startswith("#"):
            continue
        target = (index.parent / unquote(ref)).resolve()
        if "://" in ref or not target.is_file() or not target.is_relative_to(root.resolve()):
            bad.append(ref)
    return bad
