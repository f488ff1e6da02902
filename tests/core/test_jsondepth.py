"""The depth scanner (core.jsondepth) against the depth of the decoded document: strings
full of brackets, quotes and backslashes never count, and every depth around the limit is
called right."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from metering.core.jsondepth import nests_deeper_than

tricky = st.text(alphabet='[]{}"\\ ax:,', max_size=8)
documents = st.recursive(
    st.none() | st.integers() | tricky,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky, inner, max_size=3),
    max_leaves=12,
)


def depth(doc) -> int:  # type: ignore[no-untyped-def]
    if isinstance(doc, list):
        return 1 + max(map(depth, doc), default=0)
    if isinstance(doc, dict):
        return 1 + max(map(depth, doc.values()), default=0)
    return 0


@settings(max_examples=500, deadline=None)
@given(doc=documents, wrap=st.integers(0, 6), limit=st.integers(0, 8))
def test_the_scanner_agrees_with_the_decoded_depth(doc, wrap, limit):
    for _ in range(wrap):  # nest deeper, so depths on both sides of the limit occur
        doc = [doc, "]]"]
    text = json.dumps(doc).encode()
    assert nests_deeper_than(text, limit) == (depth(doc) > limit)


def test_a_run_of_openings_is_deep_without_being_decoded():
    assert nests_deeper_than(b"[" * 100_000, 64)
    assert not nests_deeper_than(b"[" * 64 + b"]" * 64, 64)
