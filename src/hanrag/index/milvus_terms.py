"""How the Milvus adapter writes Kiwi tokens and principals: as hex words.

Milvus's analysers (``standard``; milvus-lite has no whitespace one) would split Korean
tokens again at script and digit boundaries ("1년" -> "1", "년") and fold case, and a
``LIKE`` pattern must not meet its wildcards inside a principal; a hex word is taken as
exactly one term and holds neither ``%`` nor ``_``.
"""

from __future__ import annotations


def encode_tokens(tokens: list[str]) -> str:
    """Kiwi tokens as one ASCII word each (a token's first 100 bytes)."""
    return " ".join("k" + token.encode("utf-8")[:100].hex() for token in tokens if token)


def decode_tokens(encoded: str) -> list[str]:
    """The tokens :func:`encode_tokens` wrote (a word cut short by a length limit is dropped,
    a character cut by the 100-byte limit too)."""
    words = [word[1:] for word in encoded.split() if word.startswith("k") and len(word) % 2 == 1]
    return [bytes.fromhex(word).decode("utf-8", "ignore") for word in words]


def encode_principal(principal: str) -> str:
    """A principal as one hex word: no LIKE wildcard, no separator inside."""
    return "p" + principal.encode("utf-8").hex()


def acl_terms(acl: list[str]) -> str:
    """The ACL as space-delimited hex words, with a space at both ends so that
    ``like "% word %"`` matches whole words only."""
    return " " + " ".join(encode_principal(p) for p in acl) + " "
