"""Name normalisation for joining artists and songs across Last.fm, Spotify and Genius.

Rules, in order (each one is tested):

1. Unicode NFKD, then drop combining marks (accents): "Beyoncé" -> "beyonce"; non-Latin letters are kept.
2. Case-fold: "MALICE MIZER" -> "malice mizer".
3. "&" and "+" read as "and"; a leading "the " is dropped ("The Beatles" == "Beatles").
4. Apostrophes vanish ("Don't" -> "dont"); other punctuation becomes a space, then white space
   collapses ("AC/DC" -> "ac dc", "P!nk" -> "p nk").

Song titles additionally lose bracketed parts ("(feat. X)", "[Remastered]"), a " - ..." suffix
(" - Remix", " - Live", " - 2011 Remaster") and a trailing "feat./ft./featuring ..." part.

Examples
--------
>>> normalize_name("The Beatles")
'beatles'
>>> normalize_name("Beyoncé & Jay-Z")
'beyonce and jay z'
>>> normalize_title("Memories - Dillon Francis Remix")
'memories'
>>> normalize_title("I Don't Care (with Justin Bieber)")
'i dont care'
"""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

_AND = re.compile(r"\s*[&+]\s*")
_APOSTROPHE = re.compile(r"['’`´]")
_LEADING_THE = re.compile(r"^the\s+")
_NON_WORD = re.compile(r"[\W_]+", flags=re.UNICODE)
_BRACKETED = re.compile(r"\s*[\(\[\{][^\)\]\}]*[\)\]\}]")
_DASH_SUFFIX = re.compile(r"\s+[-–—]\s+.*$")
_FEATURING = re.compile(r"\s+(?:feat\.?|ft\.?|featuring|with)\s+.*$", flags=re.IGNORECASE)


def strip_accents(text: str) -> str:
    """Decompose characters and drop combining marks, keeping base letters of every script."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def normalize_name(name: object) -> str:
    """Normalise an artist name for joining; missing values give the empty string."""
    if not isinstance(name, str):
        return ""
    text = strip_accents(name).casefold().strip()
    text = _AND.sub(" and ", text)
    text = _APOSTROPHE.sub("", text)
    text = _NON_WORD.sub(" ", text).strip()
    text = _LEADING_THE.sub("", text)
    return " ".join(text.split())


def strip_title_decorations(title: str) -> str:
    """Drop bracketed parts, " - ..." suffixes and trailing featured artists from a song title."""
    text = _BRACKETED.sub("", title)
    text = _DASH_SUFFIX.sub("", text)
    text = _FEATURING.sub("", text)
    return text.strip() or title


def normalize_title(title: object) -> str:
    """Normalise a song title for joining: decorations removed, then :func:`normalize_name` rules."""
    if not isinstance(title, str):
        return ""
    return normalize_name(strip_title_decorations(title))


def primary_artist(artist: object) -> str:
    """The main artist of a credit such as "Drake feat. Rihanna" (the featured part removed)."""
    if not isinstance(artist, str):
        return ""
    return _FEATURING.sub("", artist).strip()


def normalize_names(names: pd.Series) -> pd.Series:
    """Vectorised :func:`normalize_name` over a Series (missing values become "")."""
    return names.map(normalize_name).astype("string").fillna("")
