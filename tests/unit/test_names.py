"""Names a reader can see, and names that stay whole: clean_text on hostile and on real names side by side."""

from __future__ import annotations

import pytest

from app.core.snapshot import MAX_COMBINING_MARKS
from app.core.snapshot import clean_text

# Characters that draw nothing where they stand.
INVISIBLE_ONLY = [
    "\u200b",  # zero-width space
    "\u200b\u200b\u200b",
    "\ufeff",  # BOM
    "\u2060",  # word joiner
    "\u200c",  # zero-width non-joiner, alone
    "\u200d",  # zero-width joiner, alone
    "\u200e\u200f\u061c",  # direction marks, nothing to direct
    "\U000e0041\U000e0042\U000e0043",  # tag letters outside a flag
    "\U000e0001\U000e0065\U000e006e",  # language tag
    "\U000e007f",  # a lone cancel tag
    "\u3164",  # Hangul filler
    "\u2061\u2062\u2063\u2064",  # invisible operators
    "\u180e",  # Mongolian vowel separator
    " \u200b \ufeff \u2060 ",
    "\u0301" * 300,  # combining marks on nothing are capped, not blank; see below
]


@pytest.mark.parametrize("raw", INVISIBLE_ONLY[:-1])
def test_name_of_invisible_characters_is_blank_so_counts_as_missing(raw):
    assert clean_text(raw) == ""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Rad\u200biohead", "Radiohead"),
        ("\ufeffBjörk", "Björk"),
        ("Sigur\u2060 Rós", "Sigur Rós"),
        ("Daft\u200e Punk", "Daft Punk"),
        ("Tag\U000e0041\U000e0042ged", "Tagged"),
        ("\u200cAphex Twin\u200d", "Aphex Twin"),
        ("Air \u200c France", "Air  France"),
    ],
)
def test_invisible_characters_are_removed_from_a_name(raw, expected):
    assert clean_text(raw) == expected


def test_a_tower_of_combining_marks_is_capped():
    text = clean_text("Z" + "\u0336\u0301\u0317" * 100 + "algo")

    assert text == "Z" + ("\u0336\u0301\u0317\u0336\u0301\u0317")[:MAX_COMBINING_MARKS] + "algo"


def test_300_combining_marks_alone_keep_only_the_cap():
    assert clean_text("\u0301" * 300) == "\u0301" * MAX_COMBINING_MARKS


# Real names that need the very characters removed elsewhere: kept exactly.
REAL_NAMES = [
    "می\u200cخواهم",  # Persian: ZWNJ between letters
    "ناصر عبداللهی",  # Persian singer
    "محمد\u200cرضا شجریان",  # Mohammad-Reza Shajarian, with ZWNJ
    "फ़िल्म",  # Hindi with nukta and vowel sign
    "क्\u200dष",  # Devanagari conjunct with ZWJ (half form)
    "ಕನ್ನಡ\u200cದ",  # Kannada with ZWNJ
    "👨\u200d👩\u200d👧\u200d👦 Family",  # emoji ZWJ sequence
    "🏳\ufe0f\u200d🌈 Pride",  # rainbow flag: variation selector then ZWJ
    "👩🏽\u200d💻 coder",  # skin tone modifier then ZWJ
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f Scotland",  # subdivision flag tags
    "🏴\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f Cymru",
    "עומר אדם",  # Hebrew
    "שָׁלוֹם",  # Hebrew with points
    "فيروز",  # Arabic
    "أم كلثوم",  # Umm Kulthum
    "\u200fفيروز - Live 1971",  # RLM in mixed Arabic and Latin text
    "Tiếng Việt",  # Vietnamese: stacked tone marks
    "བོད་ཡིག",  # Tibetan
    "Sigur Rós",
    "坂本龍一",
]


@pytest.mark.parametrize("name", REAL_NAMES)
def test_real_names_are_kept_exactly(name):
    assert clean_text(name) == name
