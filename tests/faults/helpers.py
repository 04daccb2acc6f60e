"""Helpers of the fault-injection tests: what a page says, parsed, and timed requests.

The site itself is tests.support.stack's Stack; this module only reads what it serves.
"""

from __future__ import annotations

import html.parser
import re

import requests

from tests.support import timed
from tests.support.stack import RESPONSE_TIMEOUT_S


def page_state(page: str) -> str:
    match = re.search(r'data-state="(\w+)"', page)
    assert match is not None, page[:2000]
    return match.group(1)


class PageParser(html.parser.HTMLParser):
    """Collect every element, attribute and text node of a page, as a browser's tokenizer would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.texts: list[str] = []
        self.comments: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, attrs))

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, attrs))

    def handle_data(self, data):
        self.texts.append(data)

    def handle_comment(self, data):
        self.comments.append(data)

    @classmethod
    def parse(cls, page: str) -> PageParser:
        parser = cls()
        parser.feed(page)
        parser.close()
        return parser


def timed_get(url: str) -> tuple[requests.Response, float]:
    return timed(lambda: requests.get(url, timeout=RESPONSE_TIMEOUT_S))
