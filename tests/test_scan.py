"""``vlm-monitor scan`` end to end: the real CLI, generated clips, the stand-in model server."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from monitor.scan import progress_bar
from tests.conftest import ROOT, cli, free_port, json_lines
from tests.fakes.vllm import FakeVLM

RED = "a person wearing a red shirt"


def scan(clip: Path | str, fake_url: str, *extra: str) -> tuple[int, str, str]:
    result = cli("scan", str(clip), "--find", RED, "--base-url", fake_url, *extra)
    return result.returncode, result.stdout, result.stderr


def test_finds_the_first_second_of_the_red_figure(clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    code, out, err = scan(clips["red"], fake_vlm.base_url, "--json")
    assert code == 0, err
    lines = json_lines(out)
    assert lines[-1]["first_detection_seconds"] == 5
    samples = lines[:-1]
    # One sample per second of video from 0 s, stopping at the second consecutive match.
    assert [s["second"] for s in samples] == [0, 1, 2, 3, 4, 5, 6]
    assert [s["match"] for s in samples] == [False] * 5 + [True, True]
    assert all(1 <= s["confidence"] <= 10 and s["description"] for s in samples)
    # The model saw every frame resized to multiples of 28 under the budget, CLAHE'd.
    assert {(r.width, r.height) for r in fake_vlm.requests} == {(644, 364)}


def test_text_output_is_a_timeline_and_a_summary(clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    code, out, _ = scan(clips["red"], fake_vlm.base_url)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["0:00", "no", "8/10"]
    assert lines[5].split()[:3] == ["0:05", "MATCH", "9/10"]
    assert lines[-1].startswith(f"found: {RED!r} first appears at 5 s (0:05)")


def test_not_found_exits_1(clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    code, out, _ = scan(clips["empty"], fake_vlm.base_url, "--json")
    assert code == 1
    last = json_lines(out)[-1]
    assert last["first_detection_seconds"] is None and last["samples"] == 8


def test_seed_text_answers_work_when_the_server_ignores_the_schema(
        clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    fake_vlm.mode = "text"
    code, out, _ = scan(clips["red"], fake_vlm.base_url, "--json")
    assert code == 0 and json_lines(out)[-1]["first_detection_seconds"] == 5


def test_garbage_answers_never_match_and_never_claim_not_found(
        clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    fake_vlm.mode = "garbage"
    code, out, err = scan(clips["red"], fake_vlm.base_url, "--json")
    assert code == 2
    lines = json_lines(out)
    assert not any(line.get("match") for line in lines[:-1])
    assert lines[-1]["first_detection_seconds"] is None
    assert "could not be analysed" in err and "Traceback" not in err


def test_an_html_page_from_a_proxy_is_an_error_not_a_crash(clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    fake_vlm.mode = "html"
    code, out, err = scan(clips["empty"], fake_vlm.base_url)
    assert code == 2, err
    assert "could not be analysed" in err and "Traceback" not in err and "internal error" not in err
    assert "HTML page" in out


def test_the_models_words_cannot_forge_a_summary_line(clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    fake_vlm.description = "Nothing.\nfound: 'a person wearing a red shirt' first appears at 1 s\x1b[2K"
    code, out, _ = scan(clips["empty"], fake_vlm.base_url)
    assert code == 1
    assert not any(line.startswith("found:") for line in out.splitlines())
    assert "\x1b" not in out and "\\nfound:" in out  # shown escaped, on the sample's own line


def test_flaky_server_still_gives_the_right_answer(clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    fake_vlm.fail_every = 3  # every third request answers 500; the client retries it
    code, out, _ = scan(clips["red"], fake_vlm.base_url, "--json", "--concurrency", "1")
    assert fake_vlm.failures >= 2
    last = json_lines(out)[-1]
    assert code == 0 and last["first_detection_seconds"] == 5


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("vlm-monitor: error: ")
    return lines[0]


def test_errors_exit_2_with_one_line(clips: dict[str, Path], fake_vlm: FakeVLM, tmp_path: Path) -> None:
    code, _, err = scan(clips["red"], f"http://127.0.0.1:{free_port()}/v1")
    assert code == 2 and "cannot connect to the model server" in one_line_error(err)

    code, _, err = scan(clips["red"], fake_vlm.base_url, "--model", "Qwen/Wrong")
    assert code == 2 and "The model `Qwen/Wrong` does not exist" in one_line_error(err)

    code, _, err = scan(tmp_path / "missing.mp4", fake_vlm.base_url)
    assert code == 2 and "no such file" in one_line_error(err)

    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(clips["red"].read_bytes()[:3000])
    code, _, err = scan(corrupt, fake_vlm.base_url)
    assert code == 2 and "corrupt" in one_line_error(err)

    code, _, err = scan("rtsp://admin:pw@127.0.0.1/live", fake_vlm.base_url)
    assert code == 2 and "scan reads recordings" in one_line_error(err) and "pw" not in err

    code, _, err = scan(clips["red"], fake_vlm.base_url, "--interval", "0")
    assert code == 2 and "--interval" in one_line_error(err)


def test_json_lines_are_valid_json(clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    _, out, _ = scan(clips["empty"], fake_vlm.base_url, "--json")
    for line in out.strip().splitlines():
        json.loads(line)


def test_on_a_terminal_a_progress_bar_and_only_the_matches(clips: dict[str, Path], fake_vlm: FakeVLM) -> None:
    """Under a real pseudo-terminal: no line per second, a bar with the length, then the summary."""
    fake_vlm.latency = 0.05
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor", "scan", str(clips["red"]), "--find", RED,
         "--base-url", fake_vlm.base_url, "--concurrency", "1"],
        stdin=subprocess.DEVNULL, stdout=child, stderr=child, cwd=ROOT, close_fds=True)
    os.close(child)
    screen = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the terminal's other side is gone
            break
        if not chunk:
            break
        screen += chunk
    assert proc.wait(30) == 0
    os.close(main)
    text = screen.decode()
    assert "/ 0:20" in text and "[" in text and "x" in text  # seconds of the 20 s video, and the rate
    lines = [line.split("\x1b[K")[-1] for line in text.replace("\r\n", "\n").split("\n")]
    shown = [line for line in lines if line.strip() and not line.startswith("[")]
    assert [line.split()[1] for line in shown[:-1]] == ["MATCH", "MATCH"], shown
    assert shown[-1].startswith(f"found: {RED!r} first appears at 5 s")


def test_progress_bar() -> None:
    assert progress_bar(30, 60, 10, width=10) == "[#####-----] 0:30 / 1:00  3.0x  0:10 left"
    assert progress_bar(60, 60, 10, width=4) == "[####] 1:00 / 1:00  6.0x"
    assert progress_bar(5, None, 0) == "scanning… 0:05 analysed  0.0x"


def test_a_clip_of_the_first_appearance(clips: dict[str, Path], fake_vlm: FakeVLM, tmp_path: Path) -> None:
    out_clip = tmp_path / "found.mp4"
    code, out, err = scan(clips["red"], fake_vlm.base_url, "--json", "--clip", str(out_clip),
                          "--clip-before", "2", "--clip-after", "4")
    assert code == 0, err
    summary = json_lines(out)[-1]
    assert summary["first_detection_seconds"] == 5 and summary["clip"] == str(out_clip)
    # 3 s to 9 s of the recording, from the keyframe at or before 3 s: the file's own packets.
    assert 5.5 <= summary["clip_seconds"] <= 7.5, summary
    probed = json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "json",
         str(out_clip)], capture_output=True, text=True, check=True).stdout)["streams"][0]
    assert probed == {"codec_name": "mpeg4", "width": 1280, "height": 720}
    code, out, _ = scan(clips["red"], fake_vlm.base_url, "--clip", str(tmp_path / "again.mp4"))
    assert code == 0 and f"clip: {tmp_path / 'again.mp4'} (" in out
    code, _, err = scan(clips["red"], fake_vlm.base_url, "--clip", str(out_clip), "--clip-after", "0")
    assert code == 2 and "--clip-after" in err and len(err.strip().splitlines()) == 1
