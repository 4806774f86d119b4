from __future__ import annotations

from monitor.detector import Cleared, Detector, Observation, Raised

M, A, U = Observation.MATCH, Observation.ABSENT, Observation.UNKNOWN


def run(observations: list[Observation], consecutive: int = 2, rearm: int = 3) -> list[tuple[int, object]]:
    d: Detector[int] = Detector(consecutive, rearm)
    return [(i, e) for i, o in enumerate(observations) if (e := d.observe(o, i)) is not None]


def test_two_in_a_row_raise_one_alert_at_the_first_of_them() -> None:
    assert run([A, A, M, M]) == [(3, Raised(first=2, last=3))]


def test_a_single_match_is_not_enough() -> None:
    assert run([M, A, M, A, M, A]) == []


def test_a_person_standing_still_is_one_alert() -> None:
    events = run([M] * 50)
    assert events == [(1, Raised(first=0, last=1))]


def test_rearms_only_after_enough_absent_samples() -> None:
    events = run([M, M, A, A, M, A, A, A, M, M])
    assert events == [(1, Raised(0, 1)), (7, Cleared(4)), (9, Raised(8, 9))]


def test_unknown_neither_breaks_a_streak_nor_ends_an_episode() -> None:
    assert run([M, U, M]) == [(2, Raised(0, 2))]
    # A dead model server for a while must not end the episode and re-alert.
    assert run([M, M] + [U] * 20 + [M, M]) == [(1, Raised(0, 1))]


def test_unknown_does_not_count_towards_rearm() -> None:
    assert run([M, M, A, U, A, U]) == [(1, Raised(0, 1))]
    assert run([M, M, A, U, A, U, A]) == [(1, Raised(0, 1)), (6, Cleared(1))]


def test_consecutive_of_one_alerts_on_the_first_match() -> None:
    assert run([A, M], consecutive=1) == [(1, Raised(1, 1))]


def test_the_readme_timeline() -> None:
    # README "When does it alert?": seconds 0..15.
    timeline = [A, M, A, M, M, M, U, M, A, A, M, A, A, A, M, M]
    assert run(timeline) == [(4, Raised(3, 4)), (13, Cleared(10)), (15, Raised(14, 15))]


def test_repeats_logs_the_first_then_one_a_minute_with_the_count() -> None:
    from monitor.logs import Repeats

    r = Repeats(every=60)
    assert r.check("BadAnswer", 0.0) == 0
    assert [r.check("BadAnswer", t) for t in (1.0, 2.0, 59.0)] == [None, None, None]
    assert r.check("Rejected", 3.0) == 0  # another kind is news
    assert r.check("BadAnswer", 60.0) == 3 and r.left_out() == 0
