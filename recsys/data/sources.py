"""The raw data sets as a declarative registry: folder, canonical URL, every file with its sha256 and rows.

Ingest (:mod:`recsys.data.ingest`) reads this registry; nothing here touches the network or the disk.

Examples
--------
>>> SOURCES["lastfm"].folder
'hetrec2011-lastfm-2k'
>>> [spec.name for spec in SOURCES["spotify"].required_files]
['spotify_songs.csv']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FileFormat = Literal["lines", "csv", "parquet", "text"]


@dataclass(frozen=True)
class SourceFile:
    """One expected file of a source.

    Parameters
    ----------
    name : str
        File name inside the source folder (and the basename of the archive member).
    sha256 : str
        SHA-256 of the official file.
    rows : int or None
        Official number of data rows (header excluded); None for documentation files.
    fmt : {"lines", "csv", "parquet", "text"}
        How rows are counted: one per line, one per (possibly multi-line) CSV record, Parquet metadata,
        or not at all.
    required : bool
        Whether the pipeline needs the file; optional files are skipped (and reported) when absent
        or when they fail verification.
    remote : bool
        Whether the canonical source carries the file; local-only files are never downloaded.
    """

    name: str
    sha256: str
    rows: int | None = None
    fmt: FileFormat = "text"
    required: bool = True
    remote: bool = True


@dataclass(frozen=True)
class Source:
    """A data set: its folder name, canonical URL, archive kind and expected files.

    For ``archive="zip"`` the URL is the archive; for ``"plain"`` it is the main file's URL and the
    other files are fetched from the same directory.
    """

    name: str
    folder: str
    url: str
    archive: Literal["zip", "plain"]
    files: tuple[SourceFile, ...]

    @property
    def required_files(self) -> tuple[SourceFile, ...]:
        """The files the pipeline cannot do without."""
        return tuple(spec for spec in self.files if spec.required)


SOURCES: dict[str, Source] = {
    "lastfm": Source(
        name="lastfm",
        folder="hetrec2011-lastfm-2k",
        url="https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
        archive="zip",
        files=(
            SourceFile(
                "user_artists.dat",
                "001400dc3c7d2667fca6e4ea6dc6acc31a9dd28ad5cd0f74cea988c019934d3b",
                92_834,
                "lines",
            ),
            SourceFile(
                "artists.dat",
                "c173881362c6b28551368fecb3c0be5a6a30a6cd859e1f5775413dfe46d48648",
                17_632,
                "lines",
            ),
            SourceFile(
                "tags.dat",
                "e95175f259be4c0c47644ae23d66131cd6d5767142a1405000e79f5584691d70",
                11_946,
                "lines",
            ),
            SourceFile(
                "user_taggedartists.dat",
                "d31fe938fcfeed6f0059f37a36b156f63674d073fc2553e5cc9dc1595e365bc7",
                186_479,
                "lines",
            ),
            SourceFile(
                "user_friends.dat",
                "9a3a8f7fa5f5ec832335e5b58ed69a4cf27c6f6f6afcde62134810eea46445a7",
                25_434,
                "lines",
            ),
            SourceFile(
                "readme.txt",
                "44c38757b3a24e68e844ac60c97ba7fd8e0f691cf1b00e9cf6bd8854df0dd64a",
                required=False,
            ),
        ),
    ),
    "spotify": Source(
        name="spotify",
        folder="spotify-songs-tidytuesday-2020-01-21",
        url="https://raw.githubusercontent.com/rfordatascience/tidytuesday/master/data/2020/2020-01-21/spotify_songs.csv",
        archive="plain",
        files=(
            SourceFile(
                "spotify_songs.csv",
                "9902920cfe4940f0914ebb6716801a42f7f19ac88fbd6693eaae7e2822b16845",
                32_833,
                "csv",
            ),
            SourceFile(
                "readme.md",
                "807a0b766ecd7f674d8987a728534e98a3b5e938a9b033e5a6cde5f8265112b5",
                required=False,
            ),
        ),
    ),
    "lyrics": Source(
        name="lyrics",
        folder="poplyrics-1k",
        url="https://raw.githubusercontent.com/ashuwhy/poplyrics-1k/main/poplyric-1k.parquet",
        archive="plain",
        files=(
            SourceFile(
                "poplyric-1k.parquet",
                "a265122acc81f59d165cc3fc4d9c9aa6f8423ffa05fe347700f20fb79e018e09",
                1_000,
                "parquet",
            ),
            # A CSV export of the parquet that local folders may carry; the repository has no such file.
            SourceFile(
                "poplyrics-1k.csv",
                "cdf8923247e46921d3521a7e52118ca99bd4ec7070af6e32d83114887c12f0b7",
                1_000,
                "csv",
                required=False,
                remote=False,
            ),
        ),
    ),
}
"""The three raw data sets, by name."""
