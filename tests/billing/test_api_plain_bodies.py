"""Plain checks of check/track bodies: they take only bodies the serializer takes, with
the same validated data, so every 422 still comes from the serializer."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.api.views.entitlements import CheckIn, TrackIn

ids = st.one_of(
    st.from_regex(r"[A-Za-z0-9_.:-]{1,12}", fullmatch=True),
    st.sampled_from(["ü", "a b", "x" * 255, "x" * 256, " c1", "c1 ", "a/b", "ab\n", "", "\x7f", "😀", "\x00"]),
    st.sampled_from([12, None, True, 1.5, [], {}]),
)
slugs = st.one_of(
    st.from_regex(r"[-a-zA-Z0-9_]{1,10}", fullmatch=True),
    st.sampled_from(["bad slug", "x" * 100, "x" * 101, " pro", "pro ", "pro\n", "", "é", 5, None]),
)
ints = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([10**15, 10**15 + 1, -(10**15), -(10**15) - 1, 2**63, True, False, 1.0, "1", None]),
)
keys = st.one_of(st.text(max_size=6), st.sampled_from([" k", "k ", "", "x" * 255, "x" * 256, "\x00", 5, None]))
properties = st.one_of(
    st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4), max_size=3),
    st.sampled_from([[1], None, "x", {f"k{i}": i for i in range(51)}, {"big": "x" * 17000}]),
)
check_bodies = st.fixed_dictionaries(
    {"customer": ids, "feature": slugs},
    optional={"requiredBalance": ints, "sendEvent": st.one_of(st.booleans(), st.sampled_from([0, 1, "true", None])),
              "entityId": ids, "lock": st.just({"enabled": True}), "other": st.integers()},
)
track_bodies = st.fixed_dictionaries(
    {"customer": ids, "feature": slugs},
    optional={"amount": ints, "entityId": ids, "idempotencyKey": keys, "properties": properties,
              "timestamp": st.just("2020-01-01T00:00:00Z"), "other": st.integers()},
)


def agrees_with_the_serializer(serializer_class, body):
    plain = serializer_class.plain(body)
    if plain is None:
        return
    serializer = serializer_class(data=body)
    assert serializer.is_valid(), (body, serializer.errors)
    assert dict(serializer.validated_data) == plain


class TestPlainBodies:
    @settings(max_examples=300, deadline=None)
    @given(body=check_bodies)
    def test_a_check_body_taken_plainly_is_one_the_serializer_takes_the_same_way(self, body):
        agrees_with_the_serializer(CheckIn, body)

    @settings(max_examples=300, deadline=None)
    @given(body=track_bodies)
    def test_a_track_body_taken_plainly_is_one_the_serializer_takes_the_same_way(self, body):
        agrees_with_the_serializer(TrackIn, body)

    @pytest.mark.parametrize("body", [
        {"customer": "c1", "feature": "tokens"},
        {"customer": "c1", "feature": "tokens", "requiredBalance": 3, "sendEvent": True, "entityId": "u1"},
    ])
    def test_the_usual_check_bodies_are_taken_plainly(self, body):
        assert CheckIn.plain(body) is not None
        agrees_with_the_serializer(CheckIn, body)

    @pytest.mark.parametrize("body", [
        {"customer": "c1", "feature": "tokens"},
        {"customer": "c1", "feature": "tokens", "amount": -4, "idempotencyKey": "job-1", "properties": {"model": "x"}},
    ])
    def test_the_usual_track_bodies_are_taken_plainly(self, body):
        assert TrackIn.plain(body) is not None
        agrees_with_the_serializer(TrackIn, body)

    @pytest.mark.parametrize("body", [[], "x", {"customer": "c1"}, {"customer": "c1", "feature": "t", "lock": {}},
                                      {"customer": "c1", "feature": "t", "requiredBalance": 0}])
    def test_anything_else_is_left_to_the_serializer(self, body):
        assert CheckIn.plain(body) is None
