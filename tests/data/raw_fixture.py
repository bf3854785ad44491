"""A tiny, valid raw-data folder laid out like the real one; tests break one file at a time."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from recsys.cli.main import app
from recsys.data.schemas import ARTISTS, LYRICS_SONGS, SPOTIFY_SONGS, TAGS, USER_ARTISTS, USER_TAGGED_ARTISTS

AUDIO = "0.5,0.6,5,-5.0,1,0.05,0.1,0.0,0.1,0.5,120.0,200000"
SPOTIFY_HEADER = (
    "track_id,track_name,track_artist,track_popularity,track_album_id,track_album_name,"
    "track_album_release_date,playlist_name,playlist_id,playlist_genre,playlist_subgenre,danceability,"
    "energy,key,loudness,mode,speechiness,acousticness,instrumentalness,liveness,valence,tempo,duration_ms"
)


def write_raw(root: Path) -> Path:
    """Write 6 users x 4 artists of listens plus tags, Spotify tracks and lyrics under ``root``."""
    listens = ["userID\tartistID\tweight"] + [
        f"{user}\t{artist}\t{10 * user + artist}"
        for user in range(1, 7)
        for artist in (1, 2, 3, 4)
        if user + artist < 9
    ]
    files = {
        USER_ARTISTS.path: "\r\n".join(listens) + "\r\n",
        ARTISTS.path: "id\tname\turl\tpictureURL\n"
        "1\tBeyoncé\tu\tp\n2\tThe Beatles\tu\tp\n3\tAdele\tu\t\n4\tNiche Band\tu\tp\n",
        TAGS.path: "tagID\ttagValue\r\n1\tpop\r\n2\trock\r\n3\tsoul\r\n",
        USER_TAGGED_ARTISTS.path: "userID\tartistID\ttagID\tday\tmonth\tyear\r\n"
        "1\t1\t1\t1\t4\t2009\r\n2\t1\t1\t1\t4\t2009\r\n1\t2\t2\t1\t4\t2010\r\n1\t3\t3\t1\t4\t2010\r\n",
        SPOTIFY_SONGS.path: "\n".join(
            [
                SPOTIFY_HEADER,
                f"t1,Halo,Beyonce,80,al,Album,2008-01-01,P,pl1,pop,dance pop,{AUDIO}",
                f"t2,Hello - Remix,Adele,70,al,Album,2015,P,pl2,r&b,soul,{AUDIO}",
                f"t3,Help!,The Beatles,60,al,Album,1965-08,P,pl3,rock,classic,{AUDIO}",
            ]
        )
        + "\n",
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("latin-1" if relative == TAGS.path else "utf-8"))
    lyrics = pd.DataFrame(
        {
            "track_name": ["Hello", "Halo", "Unmatched"],
            "album": ["25", "I Am", "X"],
            "release_date": ["2015-10-23", "2008", "bad"],
            "song_length": ["4:55", "4:21", "3:00"],
            "popularity": [90.0, 80.0, 1.0],
            "songwriters": [["Adele"], ["Beyonce"], ["Nobody"]],
            "artist": ["Adele", "Beyoncé", "Nobody"],
            "lyrics": ["[Verse 1]\nhello from the other side", "[Chorus]\nhalo halo", "la la"],
            "genre": [["pop"], ["pop"], ["pop"]],
            "featured_artist": [None, None, None],
        }
    )
    (root / LYRICS_SONGS.path).parent.mkdir(parents=True, exist_ok=True)
    lyrics.to_parquet(root / LYRICS_SONGS.path, index=False)
    return root


def run_prepare(raw: Path, out: Path, params: Path) -> tuple[int, str]:
    """``recsys prepare`` through the CLI, in-process: its exit code and everything it printed."""
    arguments = ["prepare", "--params", str(params), "--raw", str(raw), "--out", str(out)]
    result = CliRunner().invoke(app, arguments)
    return result.exit_code, result.output
