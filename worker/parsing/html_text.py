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

# Paragraph-like blocks are followed by a blank line; line-like blocks by a line break only
# (webmail writes one <div> per line, so a blank line after each would double-space the text).
_PARAGRAPH_TAGS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote", "ul", "ol", "pre"}
)
_LINE_TAGS = frozenset(
    {"div", "li", "tr", "dd", "dt", "section", "article", "header", "footer", "address", "hr"}
)
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
        self._trailing_newlines = 1  # the start of the text counts as the start of a line

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _INVISIBLE_TAGS:
            self._invisible_depth += 1
            return
        if tag == "br":
            self._append_newline()
        elif tag in _PARAGRAPH_TAGS or tag in _LINE_TAGS:
            self._ensure_newlines(1)
        elif tag in _CELL_TAGS:
            self._write(" ")
        if tag == "blockquote":
            self._quote_depth += 1
        elif tag == "li":
            self._write("- ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self._append_newline()
        elif tag in _PARAGRAPH_TAGS or tag in _LINE_TAGS:
            self._ensure_newlines(1)

    def handle_endtag(self, tag: str) -> None:
        if tag in _INVISIBLE_TAGS:
            self._invisible_depth = max(0, self._invisible_depth - 1)
            return
        if tag == "blockquote":
            self._quote_depth = max(0, self._quote_depth - 1)
        if tag in _PARAGRAPH_TAGS:
            self._ensure_newlines(2)
        elif tag in _LINE_TAGS:
            self._ensure_newlines(1)

    def handle_data(self, data: str) -> None:
        if self._invisible_depth:
            return
        text = _SPACES.sub(" ", data.replace("\r", " ").replace("\n", " "))
        if self._trailing_newlines:
            text = text.lstrip()
        if text:
            self._write(text)

    def _write(self, text: str) -> None:
        if self._trailing_newlines and self._quote_depth:
            self._chunks.append("> " * self._quote_depth)
        self._chunks.append(text)
        self._trailing_newlines = 0

    def _append_newline(self) -> None:
        self._chunks.append("\n")
        self._trailing_newlines += 1

    def _ensure_newlines(self, count: int) -> None:
        while self._trailing_newlines < count:
            self._append_newline()

    def text(self) -> str:
        lines = (line.rstrip() for line in "".join(self._chunks).split("\n"))
        return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> str:
    """Plain text of an HTML document or fragment, paragraphs kept as lines."""
    collector = _TextCollector()
    collector.feed(html)
    collector.close()
    return collector.text()
