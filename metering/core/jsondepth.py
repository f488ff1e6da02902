"""How deeply a JSON text nests, found without a recursive decoder and without a Python
loop over its bytes.

A decoder that recurses once per level (msgspec, the standard library) exhausts the C
stack on a body nested tens of thousands deep: the process dies.  This scanner never
recurses; it works on the structural characters only, with C-speed bytes operations:

1. escapes are removed (``\\\\`` pairs first, then ``\\"``), so every ``"`` left delimits a string;
2. everything but ``"[]{}`` is deleted, and brackets of both kinds become ``(`` and ``)``;
3. what the strings held is dropped: first every ``""`` (an empty string left by step 2, or two
   strings with nothing structural between them: either way the text outside strings keeps
   its brackets), then, if a string held brackets, every other piece between ``"``;
4. the innermost pairs ``()`` are removed, one level per round: well-formed JSON is gone
   after as many rounds as it nests deep, so anything left after ``limit`` rounds nests deeper.

Text that is not JSON may be called too deep or not: the decoder after this refuses it
either way (400).
"""

from __future__ import annotations

MAX_DEPTH = 64  # CONTRACT 1: deeper is 400 on every way in (HTTP bodies, stream messages)
_STRUCTURE = bytes.maketrans(b"[{]}", b"(())")
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'"[]{}'))


def nests_deeper_than(body: bytes, limit: int) -> bool:
    if b"\\" in body:  # a memchr: most bodies escape nothing, and each replacement is a scan
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    text = body.translate(_STRUCTURE, _NOT_STRUCTURE)
    if text.count(b"(") <= limit:
        return False  # the common case: a small document, or a flat one (no deeper than its openings)
    text = text.replace(b'""', b"")  # in C: most strings hold no bracket
    if b'"' in text:
        text = b"".join(text.split(b'"')[::2])  # outside the strings: the even pieces
    if b"(" * (limit + 1) in text:
        return True  # the usual deep body: a run of openings
    for _ in range(limit):
        shorter = text.replace(b"()", b"")
        if len(shorter) == len(text):  # nothing to pair: empty, or not JSON
            break
        text = shorter
    return bool(text)
