"""Pseudonyms of listeners: a keyed hash that stands for a user id in logs, reports and audit rows."""

from __future__ import annotations

import hashlib
import hmac
import os

PSEUDONYM_SALT_ENV = "RECSYS_PSEUDONYM_SALT"
"""Environment variable holding the secret salt of :func:`pseudonymise`."""
DEFAULT_PSEUDONYM_SALT = "recsys-public-default-salt"
"""Last resort of :func:`pseudonymise` without a salt. It is public: a store uses its own secret salt
(:meth:`FeedbackStore.pseudonym_salt`), and ``RECSYS_PSEUDONYM_SALT`` overrides both."""


def pseudonymise(user_id: str, salt: str | None = None) -> str:
    """Return a stable pseudonym of ``user_id``: HMAC-SHA256 keyed by a salt, as 64 hex characters.

    Parameters
    ----------
    user_id : str
        The raw external user id.
    salt : str, optional
        The secret salt. Defaults to env ``RECSYS_PSEUDONYM_SALT``, else :data:`DEFAULT_PSEUDONYM_SALT`.

    Examples
    --------
    >>> pseudonymise("u1", salt="s") == pseudonymise("u1", salt="s") != pseudonymise("u1", salt="t")
    True
    """
    key = salt if salt is not None else os.environ.get(PSEUDONYM_SALT_ENV) or DEFAULT_PSEUDONYM_SALT
    return hmac.new(key.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def salt_check(salt: str) -> str:
    """A fingerprint of ``salt`` that does not reveal it: two processes pseudonymise alike only when their
    fingerprints are equal (an erasure job records the one of the salt its pseudonym was made with).

    Examples
    --------
    >>> salt_check("s") == salt_check("s") != salt_check("t")
    True
    """
    return hmac.new(salt.encode(), b"recsys pseudonym salt check", hashlib.sha256).hexdigest()[:32]
