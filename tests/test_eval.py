"""``vlm-monitor eval``: labelled recordings replayed through the daemon, alerts scored."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monitor.evaluate import clip_name, score
from tests.conftest import cli
from tests.fakes.vllm import FakeVLM

RED = "a person wearing a red shirt"


def test_scoring_right_wrong_missed_and_delay() -> None:
    s = score([5.0, 30.0], [(5.0, 12.0), (40.0, 50.0)], delay=1.0)
    assert (s.right, s.wrong, s.missed, s.delays) == (1, 1, 1, [1.0])
    assert score([4.2], [(5.0, 12.0)], 1.0).right == 1  # a sample early still counts
    assert score([], [], 1.0).holds and not score([], [(1.0, 2.0)], 1.0).holds
    again = score([5.0, 9.0], [(5.0, 12.0)], 1.0)
    assert (again.right, again.wrong, again.missed) == (2, 0, 0)


def write(tmp_path: Path, fake: FakeVLM, clips: dict[str, Path], cases: list[dict[str, object]],
          variants: list[dict[str, object]] | None = None) -> tuple[Path, Path]:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"vlm": {"base_url": fake.base_url, "max_concurrency": 8},
                                      "streams": [{"name": "x", "url": "/unused.mp4", "targets": ["x"]}]}))
    suite = tmp_path / "suite.yaml"
    (tmp_path / "clips").mkdir(exist_ok=True)
    for name, path in clips.items():
        (tmp_path / "clips" / f"{name}.mp4").write_bytes(path.read_bytes())
    suite.write_text(yaml.safe_dump({"cases": cases, **({"variants": variants} if variants else {})}))
    return suite, config


def test_a_suite_that_holds_exits_0_with_a_table_per_variant(
        tmp_path: Path, fake_vlm: FakeVLM, clips: dict[str, Path]) -> None:
    door = [[0.45, 0.3], [0.75, 0.3], [0.75, 0.95], [0.45, 0.95]]
    wall = [[0.05, 0.2], [0.4, 0.2], [0.4, 0.8], [0.05, 0.8]]
    suite, config = write(tmp_path, fake_vlm, clips, [
        {"video": "clips/red.mp4", "target": {"name": "intruder", "description": RED, "zones": ["door"]},
         "present": [[5, 12]], "zones": [{"name": "door", "polygon": door}, {"name": "wall", "polygon": wall}]},
        {"video": "clips/empty.mp4", "target": RED, "present": []},
    ], variants=[{"name": "as configured"}, {"name": "no zones", "zones": False},
                 {"name": "second look", "verify": True}, {"name": "blue words", "description": "a blue car"}])
    result = cli("eval", str(suite), "--config", str(config), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["as configured"][:3] == ["1", "0", "0"]
    assert rows["second look"][:3] == ["1", "0", "0"]
    assert rows["blue words"][:3] == ["0", "0", "1"]  # the other description misses the figure
    assert float(rows["as configured"][3]) == 1.0  # first seen at 5 s, alerted at the next sample
    calls = {k: float(v[4].replace(",", "")) for k, v in rows.items() if k != "variant"}
    assert calls["second look"] > calls["as configured"]  # the second look costs a call


def test_a_suite_that_does_not_hold_exits_1_and_says_where(
        tmp_path: Path, fake_vlm: FakeVLM, clips: dict[str, Path]) -> None:
    suite, config = write(tmp_path, fake_vlm, {"red": clips["red"]},
                          [{"video": "clips/red.mp4", "target": RED, "present": [[14, 18]]}])
    result = cli("eval", str(suite), "--config", str(config), "--clips", str(tmp_path / "kept"), timeout=120)
    assert result.returncode == 1, result.stderr
    assert "red.mp4 (a person wearing a red shirt): 1 wrong, 1 missed" in result.stdout
    # The wrong alert's clip is kept to look at, named for what it was.
    kept = sorted(p.name for p in (tmp_path / "kept").iterdir())
    assert kept == ["as-configured-case0-red-5s-wrong.mp4"], kept
    assert (tmp_path / "kept" / kept[0]).stat().st_size > 10_000
    assert "clips: 1 kept in" in result.stdout


@pytest.mark.parametrize(("case", "message"), [
    ({"video": "clips/nope.mp4", "target": RED}, "cases[0].video: no such file"),
    ({"video": "clips/red.mp4", "target": RED, "present": [[9, 3]]}, "start < end"),
    ({"video": "clips/red.mp4", "target": {"name": "x", "zones": ["gate"]}}, "unknown zone 'gate'"),
])
def test_a_bad_suite_is_exit_2_in_one_line(tmp_path: Path, fake_vlm: FakeVLM, clips: dict[str, Path],
                                           case: dict[str, object], message: str) -> None:
    suite, config = write(tmp_path, fake_vlm, {"red": clips["red"]}, [case])
    result = cli("eval", str(suite), "--config", str(config))
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_a_kept_clips_name_is_safe_and_says_what_it_was() -> None:
    assert clip_name("second look", 3, "clips/yard night.mp4", 5.0, True) == "second-look-case3-yard-night-5s-right.mp4"
    assert clip_name("../../etc", 0, "/x/../passwd.mp4", 12.5, False) == "etc-case0-passwd-12.5s-wrong.mp4"
