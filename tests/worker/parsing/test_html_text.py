"""Tests of worker/parsing/html_text.py."""

from __future__ import annotations

from worker.parsing.html_text import html_to_text


class TestHtmlToText:
    """html_to_text gives readable lines and drops what is not shown."""

    def test_entities_and_breaks(self) -> None:
        """Entities are decoded and <br>/<p> become line breaks."""
        html = (
            "<p>Caf&eacute;&nbsp;ferm&eacute;</p>"
            "<p>L&#39;&eacute;cole &amp; la cr&egrave;che<br>fin</p>"
        )
        assert html_to_text(html) == "Café fermé\n\nL'école & la crèche\nfin"

    def test_invisible_content_dropped(self) -> None:
        """Script, style, head and conditional comments never reach the text."""
        html = (
            "<html><head><title>t</title><style>p{font-family:x}</style></head><body>"
            "<!--[if gte mso 9]><xml>o</xml><![endif]--><script>document.write(1)</script>"
            "<p class=MsoNormal>Bonjour<o:p></o:p></p></body></html>"
        )
        assert html_to_text(html) == "Bonjour"

    def test_blockquote_marked_as_quote(self) -> None:
        """Quoted history in a blockquote is prefixed with '> ' for the reply splitter."""
        text = html_to_text("<div>Oui</div><blockquote><p>Question ?</p></blockquote>")
        assert text.splitlines() == ["Oui", "> Question ?"]

    def test_list_items(self) -> None:
        """List items become dash lines."""
        assert html_to_text("<ul><li>un</li><li>deux</li></ul>") == "- un\n- deux"

    def test_unclosed_tags_tolerated(self) -> None:
        """Broken markup still yields its text."""
        assert html_to_text("<p>Bonjour<div>le <b>bac") == "Bonjour\nle bac"
