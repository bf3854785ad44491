"""Artist lookup by name: exact, prefix (bisect over sorted names), substring, then fuzzy (rapidfuzz).

Fuzzy matches are ranked by how similar the whole name is to the query (normalised Levenshtein similarity,
:data:`FUZZY_CUTOFF` at least), not by whether the query contains the name: "metalica" finds Metallica and
never pads the list with one-letter artists. A leading "the" is optional ("beatels" finds The Beatles), and
accents need not be typed ("bjork" is Björk).
"""

from __future__ import annotations

import bisect
import unicodedata
from collections.abc import Generator, Sequence

import numpy as np
from rapidfuzz import fuzz, process

CLOSE = 85.0
"""A fuzzy hit at least this similar (one typo in a name of seven letters or more) ranks with the prefix hits,
by popularity: a one-letter misspelling of a famous name comes before a prefix of an obscure one."""
FUZZY_CUTOFF = 75.0
"""Minimum rapidfuzz ``ratio`` (0-100: ``100 * (1 - edit distance / total length)``) of a fuzzy hit: one or
two typos in a name of eight letters pass, a name that merely shares letters with the query does not."""
ARTICLE = "the "
CHUNK = 4096
"""Names scanned in one step of a search (about half a millisecond of fuzzy matching)."""


def normalise(name: str) -> str:
    """Case-, accent- and space-insensitive form of a name, used for every comparison."""
    decomposed = unicodedata.normalize("NFKD", name.casefold())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


class NameIndex:
    """Search structures over item display names; ties go to the more popular artist.

    Parameters
    ----------
    names : sequence of str
        Display name of each item index.
    popularity : np.ndarray
        Listeners of each item index.

    Examples
    --------
    >>> index = NameIndex(["Radiohead", "Rammstein", "Muse"], np.array([5, 3, 9]))
    >>> [(i, how) for i, how in index.search("ra", 5)]
    [(0, 'prefix'), (1, 'prefix')]
    >>> index.exact("muse")
    2
    """

    def __init__(self, names: Sequence[str], popularity: np.ndarray) -> None:
        self._keys = [normalise(name) for name in names]
        # Names with a leading "the" are matched a second time without it; the others once.
        self._bare = [
            (i, key.removeprefix(ARTICLE)) for i, key in enumerate(self._keys) if key.startswith(ARTICLE)
        ]
        # Every name in one string, one a line: a substring is found by str.find at C speed.
        self._joined = "\n".join(self._keys)
        self._starts = (
            np.cumsum([0] + [len(key) + 1 for key in self._keys[:-1]]) if self._keys else np.zeros(0)
        )
        self._rank = np.argsort(np.argsort(-np.asarray(popularity), kind="stable"), kind="stable")
        order = sorted(range(len(self._keys)), key=lambda i: (self._keys[i], self._rank[i]))
        self._sorted_keys = [self._keys[i] for i in order]
        self._sorted_items = order
        self._exact: dict[str, int] = {}
        for item in sorted(range(len(self._keys)), key=lambda i: self._rank[i]):
            self._exact.setdefault(self._keys[item], item)

    def exact(self, name: str) -> int | None:
        """The most popular item whose normalised name equals ``name``'s, or None."""
        return self._exact.get(normalise(name))

    def search(self, query: str, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` ``(item index, match kind)``: exact, then prefix, substring and fuzzy hits."""
        steps = self.search_steps(query, limit)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                hits: list[tuple[int, str]] = done.value
                return hits

    def search_steps(self, query: str, limit: int) -> Generator[None, None, list[tuple[int, str]]]:
        """:meth:`search` as steps of at most :data:`CHUNK` names each: a generator that yields between
        steps and returns the hits. The service runs one step at a time on its event loop, so a search of
        a large catalogue never holds the loop (and the requests behind it) for more than a step.

        After an exact match, hits come in tiers, each ordered by popularity: prefix hits and close fuzzy
        hits (:data:`CLOSE`), then substring hits, then the other fuzzy hits. Items sharing a display
        name (one song under two track ids) are one hit: the most listened of them.
        """
        key = normalise(query)
        if not key:
            return []
        substring = yield from self._substring(key)
        fuzzy: dict[int, float] = {}
        if len(key) >= 3:  # one or two letters are not a misspelling of anything
            fuzzy = yield from self._fuzzy(key, limit)
        tiers: dict[int, tuple[int, str]] = {}
        candidates = [
            *((item, (0, "prefix")) for item in self._prefix(key)),
            *((item, (0 if score >= CLOSE else 2, "fuzzy")) for item, score in fuzzy.items()),
            *((item, (1, "substring")) for item in substring),
        ]
        for item, tier in candidates:
            canonical = self._exact[self._keys[item]]
            tiers[canonical] = min(tiers.get(canonical, tier), tier)
        exact = self._exact.get(key)
        hits = [(exact, "exact")] if exact is not None else []
        ranked = sorted((item for item in tiers if item != exact), key=lambda i: (tiers[i][0], self._rank[i]))
        return hits + [(item, tiers[item][1]) for item in ranked[: max(limit - len(hits), 0)]]

    def twins(self) -> np.ndarray:
        """Indices of items whose display name a more listened item has too (the same song under another
        track id): the service never lists them, so a list shows each song once."""
        return np.array([i for i, key in enumerate(self._keys) if self._exact[key] != i], dtype=np.int64)

    def _prefix(self, key: str) -> list[int]:
        start = bisect.bisect_left(self._sorted_keys, key)
        stop = bisect.bisect_left(self._sorted_keys, key + "\U0010ffff", lo=start)
        return self._sorted_items[start:stop]

    def _substring(self, key: str) -> Generator[None, None, list[int]]:
        if len(key) < 3 or "\n" in key:  # one or two letters match thousands of names: prefix only
            return []
        found: list[int] = []
        at = self._joined.find(key)
        while at >= 0:
            item = int(np.searchsorted(self._starts, at, side="right")) - 1
            if not found or found[-1] != item:
                found.append(item)
            if len(found) % CHUNK == 0:
                yield
            at = self._joined.find(key, at + 1)
        return found

    def _fuzzy(self, key: str, limit: int) -> Generator[None, None, dict[int, float]]:
        """The most similar names (with and without a leading "the") and their similarity."""
        best: dict[int, float] = {}

        def keep(found: list[tuple[str, float, int]], items: Sequence[int] | range) -> None:
            for _, score, position in found:
                item = items[int(position)]
                best[item] = max(best.get(item, 0.0), float(score))

        for start in range(0, len(self._keys), CHUNK):
            keep(self._extract(key, self._keys[start : start + CHUNK], limit), range(start, start + CHUNK))
            yield
        bare_items = [item for item, _ in self._bare]
        keep(self._extract(key, [bare for _, bare in self._bare], limit), bare_items)
        return best

    @staticmethod
    def _extract(key: str, names: Sequence[str], limit: int) -> list[tuple[str, float, int]]:
        return process.extract(
            key, names, scorer=fuzz.ratio, limit=limit, score_cutoff=FUZZY_CUTOFF, processor=None
        )
