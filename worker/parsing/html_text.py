"""Readable plain text from the HTML of an email, with the standard library's HTML parser.

Mail HTML is rarely well formed (Outlook's Word markup, unclosed tags), so the converter is a
tolerant event handler rather than a tree builder: block tags become line breaks, invisible content
(scripts, styles, head, Outlook's conditional comments) is dropped, entities are decoded by the
parser, and quoted history inside `<blockquote>` is marked with "> " so the reply splitter treats it
like quoted plain text.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK_TAGS = frozenset(
    {
        "p", "div", "br", "tr", "li", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6",
        "blockquote", "pre", "hr", "section", "article", "header", "footer", "address", "dd", "dt",
    }
)  # fmt: skip
_INVISIBLE_TAGS = frozenset({"script", "style", "head", "title", "template", "noscript", "xml"})
_CELL_TAGS = frozenset({"td", "th"})
_SPACES = re.compile(r"[ \t\f\v\u00a0\u200b]+")
_BLANK_RUNS = re.compile(r"\n{3,}")


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._chunks: list[str] = []
        self._invisible_depth = 0
        self._quote_depth = 0
        self._at_line_start = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _INVISIBLE_TAGS:
            self._invisible_depth += 1
        elif tag == "blockquote":
            self._newline()
            self._quote_depth += 1
        elif tag in _BLOCK_TAGS:
            self._newline()
            if tag == "li":
                self._write("- ")
        elif tag in _CELL_TAGS:
            self._write(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self._newline()

    def handle_endtag(self, tag: str) -> None:
        if tag in _INVISIBLE_TAGS:
            self._invisible_depth = max(0, self._invisible_depth - 1)
        elif tag == "blockquote":
            self._quote_depth = max(0, self._quote_depth - 1)
            self._newline()
        elif tag in _BLOCK_TAGS:
            self._newline()

    def handle_data(self, data: str) -> None:
        if self._invisible_depth:
            return
        text = _SPACES.sub(" ", data.replace("\r", " ").replace("\n", " "))
        if self._at_line_start:
            text = text.lstrip()
        if text:
            self._write(text)

    def _write(self, text: str) -> None:
        if self._at_line_start and self._quote_depth:
            self._chunks.append("> " * self._quote_depth)
        self._chunks.append(text)
        self._at_line_start = False

    def _newline(self) -> None:
        self._chunks.append("\n")
        self._at_line_start = True

    def text(self) -> str:
        lines = (line.rstrip() for line in "".join(self._chunks).split("\n"))
        return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> str:
    """Plain text of an HTML document or fragment, paragraphs kept as lines."""
    collector = _TextCollector()
    collector.feed(html)
    collector.close()
    return collector.text()
