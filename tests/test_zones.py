"""Zones, schedules, boxes, the second look and the regional scene gate: the pure parts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml

from monitor.config import ConfigError, parse_config
from monitor.detector import Detector, Observation, Raised
from monitor.preprocess import prepare
from monitor.prompts import counter_examples
from monitor.running import plan_reload
from monitor.scene import SceneGate, thumbnail
from monitor.schedule import ScheduleError, active, local, parse_rule, zone
from monitor.verdict import parse_answer, parse_answers
from monitor.verify import region
from monitor.zones import View, area, contains, crop, in_zones, to_frame, view_for, view_of
from tests.conftest import cli

GATE = ((0.1, 0.5), (0.4, 0.5), (0.4, 1.0), (0.1, 1.0))


# --- schedules ----------------------------------------------------------------------

def at(day: int, hh: int, mm: int = 0) -> datetime:
    """2026-11-23 is a Monday: day 0."""
    return datetime(2026, 11, 23 + day, hh, mm, tzinfo=UTC)


def test_a_night_rule_runs_past_midnight_into_the_next_day() -> None:
    rule = [parse_rule("Mon-Fri 19:00-07:00")]
    assert active(rule, at(0, 19)) and active(rule, at(1, 6, 59))  # Monday night into Tuesday
    assert not active(rule, at(0, 7)) and not active(rule, at(0, 18, 59))
    assert active(rule, at(4, 23)) and active(rule, at(5, 6))  # Friday night into Saturday morning
    assert not active(rule, at(5, 19)) and not active(rule, at(0, 6))  # not Saturday; not after Sunday


def test_rule_forms() -> None:
    weekend = [parse_rule("Sat-Sun 00:00-24:00")]
    assert active(weekend, at(5, 0)) and active(weekend, at(6, 23, 59)) and not active(weekend, at(0, 0))
    daily = [parse_rule("08:00-09:30")]
    assert all(active(daily, at(d, 9, 15)) for d in range(7)) and not active(daily, at(2, 9, 30))
    listed = [parse_rule("mon,WED, friday 12:00-13:00")]
    assert [active(listed, at(d, 12, 30)) for d in range(7)] == [True, False, True, False, True, False, False]
    wrap = [parse_rule("Sat-Mon 10:00-11:00")]
    assert [active(wrap, at(d, 10)) for d in range(7)] == [True, False, False, False, False, True, True]
    assert active([], at(0, 3))  # no schedule: always


@pytest.mark.parametrize("bad", ["Mon-Fri", "Mon-Fri 25:00-07:00", "Mon-Fri 19:00-19:00", "Mo 10:00-11:00",
                                 "Funday 10:00-11:00", "10:60-11:00", "every day"])
def test_bad_rules_say_what_is_wrong(bad: str) -> None:
    with pytest.raises(ScheduleError):
        parse_rule(bad)


def test_daylight_saving_moves_with_the_wall_clock() -> None:
    berlin = zone("Europe/Berlin")
    rule = [parse_rule("19:00-20:00")]
    # 18:30 UTC is 19:30 in Berlin in winter (UTC+1) and 20:30 in summer (UTC+2).
    assert active(rule, local(datetime(2026, 1, 15, 18, 30, tzinfo=UTC), berlin))
    assert not active(rule, local(datetime(2026, 7, 15, 18, 30, tzinfo=UTC), berlin))
    # The day the clocks go forward (29 March 2026, 02:00 -> 03:00): 19:00 local is 17:00 UTC.
    assert active(rule, local(datetime(2026, 3, 29, 17, 0, tzinfo=UTC), berlin))
    with pytest.raises(ScheduleError):
        zone("Mars/Olympus")


# --- zones ----------------------------------------------------------------------------

def test_view_crop_and_boxes_back_on_the_frame() -> None:
    view = view_of([GATE])
    assert view is not None and view.rect == pytest.approx((0.08, 0.48, 0.42, 1.0))
    assert area(view) == pytest.approx(0.34 * 0.52) and area(None) == 1.0
    assert view_for([[GATE], []]) is None and view_for([[GATE], [GATE]]) is not None
    frame = np.full((100, 200, 3), 200, np.uint8)
    part = crop(frame, View((0.0, 0.0, 0.5, 1.0), (((0.0, 0.0), (0.25, 0.0), (0.25, 1.0), (0.0, 1.0)),)))
    assert part.shape == (100, 100, 3)
    assert (part[:, :45] == 200).all() and (part[:, 55:] == 127).all()  # outside the polygon: grey
    # A box in the pixels of a 400x300 image of the view maps back onto the frame.
    box = to_frame((100, 150, 200, 300), 400, 300, View((0.5, 0.5, 1.0, 1.0), ()))
    assert box == pytest.approx((0.625, 0.75, 0.75, 1.0))
    assert to_frame((-5, 10, 500, 20), 400, 300, None) == pytest.approx((0.0, 10 / 300, 1.0, 20 / 300))


def test_a_box_counts_inside_a_zone_by_its_centre_or_its_feet() -> None:
    assert contains(GATE, (0.2, 0.7)) and not contains(GATE, (0.5, 0.7))
    assert in_zones((0.15, 0.6, 0.3, 0.9), [GATE])
    assert in_zones((0.15, 0.2, 0.3, 0.9), [GATE])  # centre above the gate, feet in it
    assert not in_zones((0.6, 0.6, 0.8, 0.9), [GATE])  # beyond the fence


def test_prepare_shows_the_model_only_the_zone() -> None:
    frame = np.full((720, 1280, 3), 60, np.uint8)
    frame[:, 900:] = (0, 0, 255)  # red, outside the zone
    whole = prepare(frame, max_pixels=644 * 364)
    zoned = prepare(frame, max_pixels=644 * 364, view=view_of([GATE]))
    assert zoned.view is not None and zoned.width * zoned.height < whole.width * whole.height
    assert zoned.image_tokens < whole.image_tokens


# --- boxes in answers -------------------------------------------------------------------

def test_boxes_are_read_leniently_and_never_turn_a_match_into_an_error() -> None:
    base = '"present": true, "confidence": 9, "description": "a man"'
    assert parse_answer("{" + base + ', "box": [10, 20, 110, 220]}').box == (10, 20, 110, 220)
    assert parse_answer("{" + base + ', "bbox_2d": [[10, 20, 110, 220]]}').box == (10, 20, 110, 220)
    for bad in ['"box": [1, 2]', '"box": "here"', '"box": [50, 20, 10, 220]', '"box": [1, 2, true, 4]',
                '"box": null']:
        v = parse_answer("{" + base + ", " + bad + "}")
        assert v.present and v.confidence == 9 and v.box is None, bad
    absent = parse_answer('{"present": false, "confidence": 8, "description": "x", "box": [1, 2, 3, 4]}')
    assert absent.box is None
    two = parse_answers('{"answers": [{' + base + ', "box": [0, 0, 5, 5]}, {' + base + "}]}", 2)
    assert [v.box for v in two] == [(0, 0, 5, 5), None]


# --- second look, counter-examples, detector ------------------------------------------------

def test_the_second_look_region() -> None:
    assert region((0.4, 0.4, 0.6, 0.8), None) == pytest.approx((0.3, 0.2, 0.7, 1.0))
    small = region((0.5, 0.5, 0.51, 0.52), None)
    assert small is not None and small[2] - small[0] == pytest.approx(0.4)  # at least 20% + room
    view = view_of([GATE])
    assert region(None, view) == view.rect if view else False
    assert region(None, None) is None


def test_counter_examples_are_few_short_and_one_line() -> None:
    assert counter_examples([]) == ""
    text = counter_examples(["a red poster\non the wall", "a red poster\non the wall", "a red car",
                             "x" * 500, "a fourth"])
    assert text == ('(earlier false alarms, not this target: "a red poster on the wall"; "a red car"; "'
                    + "x" * 120 + '")')
    assert "\n" not in text and len(counter_examples(["y" * 200] * 10)) < 420


def test_a_refused_alert_keeps_the_streak() -> None:
    d: Detector[int] = Detector(2, 3)
    assert d.observe(Observation.MATCH, 1) is None
    raised = d.observe(Observation.MATCH, 2)
    assert isinstance(raised, Raised)
    d.refuse(raised)
    again = d.observe(Observation.MATCH, 3)  # the streak goes on: the next match raises again
    assert isinstance(again, Raised) and again.first == 1 and again.last == 3
    d.refuse(again)
    assert d.observe(Observation.ABSENT, 4) is None
    assert d.observe(Observation.MATCH, 5) is None  # a break starts over


# --- the regional scene gate ----------------------------------------------------------------

def test_a_small_figure_is_a_change_for_the_regional_gate_only() -> None:
    quiet = np.full((1080, 1920, 3), 150, np.uint8)  # the figure differs in brightness, as people do
    figure = quiet.copy()
    figure[900:960, 1200:1222] = (30, 30, 200)  # ~60 px tall, in a 1080p frame
    whole = SceneGate(grid=1)
    regional = SceneGate()
    for gate in (whole, regional):
        gate.analysed(thumbnail(quiet), 0.0)
    assert whole.unchanged(thumbnail(figure), 1.0)  # too few pixels of the whole frame
    assert not regional.unchanged(thumbnail(figure), 1.0)
    assert regional.unchanged(thumbnail(quiet), 1.0)


# --- config -----------------------------------------------------------------------------------

def doc(**target: object) -> dict[str, object]:
    return {"streams": [{"name": "yard", "url": "/x.mp4", "zones": [{"name": "gate", "polygon": [
        list(p) for p in GATE]}], "targets": [{"name": "intruder", "description": "a person", **target}]}]}


def test_zones_and_schedules_in_the_config() -> None:
    config = parse_config(yaml.safe_dump({**doc(zones=["gate"], schedule=["Mon-Fri 19:00-07:00"],
                                                verify=True), "timezone": "Europe/Berlin"}), "t")
    stream = config.streams[0]
    target = stream.targets[0]
    assert stream.zone_polygons(target) == [GATE] and target.verify and len(target.rules()) == 1
    assert config.stream_settings()["yard"].timezone == "Europe/Berlin"


@pytest.mark.parametrize(("change", "message"), [
    ({"zones": ["gat"]}, "unknown zone 'gat'"),
    ({"schedule": ["Mon-Fri 19:00-31:00"]}, "streams[0].targets[0].schedule[0]"),
])
def test_check_config_names_the_bad_key(tmp_path: Path, change: dict[str, object], message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc(**change)))
    result = cli("check-config", str(path))
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_bad_polygons_and_time_zones_are_config_errors() -> None:
    bad = doc()
    bad["streams"][0]["zones"][0]["polygon"] = [[0.1, 0.1], [0.5, 0.1]]  # type: ignore[index]
    with pytest.raises(ConfigError, match="polygon"):
        parse_config(yaml.safe_dump(bad), "t")
    bad["streams"][0]["zones"][0]["polygon"] = [[0.1, 0.1], [1.5, 0.1], [0.2, 0.9]]  # type: ignore[index]
    with pytest.raises(ConfigError, match="outside the frame"):
        parse_config(yaml.safe_dump(bad), "t")
    with pytest.raises(ConfigError, match="time zone"):
        parse_config(yaml.safe_dump({**doc(), "timezone": "Mars/Olympus"}), "t")
    # Three equal points, or points in a line, enclose nothing: the target could never alert.
    for degenerate in ([[0.3, 0.3]] * 3, [[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]], [[0.1, 0.1], [0.12, 0.1], [0.1, 0.12]]):
        bad["streams"][0]["zones"][0]["polygon"] = degenerate  # type: ignore[index]
        with pytest.raises(ConfigError, match=r"streams\[0\]\.zones\[0\]: .*zone 'gate' covers 0\.0"):
            parse_config(yaml.safe_dump(bad), "t")


def test_zones_schedules_and_the_time_zone_reload_by_restarting_their_stream() -> None:
    old = parse_config(yaml.safe_dump(doc(zones=["gate"])), "t")
    for new in [doc(), doc(zones=["gate"], schedule=["Mon 10:00-11:00"]), {**doc(zones=["gate"]),
                                                                          "timezone": "Asia/Tokyo"}]:
        plan = plan_reload(old, parse_config(yaml.safe_dump(new), "t"))
        assert plan.restarted == ["yard"] and plan.fixed == [], new
    moved = doc(zones=["gate"])
    moved["streams"][0]["zones"][0]["polygon"][0] = [0.2, 0.5]  # type: ignore[index]
    assert plan_reload(old, parse_config(yaml.safe_dump(moved), "t")).restarted == ["yard"]
