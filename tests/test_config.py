from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitor.config import ConfigError, load_config, parse_config
from monitor.passwords import hash_password
from monitor.urls import redact_url
from tests.conftest import ROOT, cli

MINIMAL = "streams:\n  - name: cam\n    url: clip.mp4\n    targets: [a red car]\n"


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "cfg.yaml", env or {})
    return str(e.value)


def test_example_config_is_valid_and_follows_the_seed_defaults() -> None:
    config = load_config(ROOT / "config" / "example.yaml", env={})
    assert config.vlm.base_url == "http://127.0.0.1:8000/v1"
    assert config.vlm.model == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert config.detection.min_confidence == 7
    assert config.detection.consecutive_matches == 2
    assert config.streams[0].sample_interval_seconds == 1.0
    assert config.preprocess.clahe is True
    # Relative file paths are taken from the config file's folder.
    assert Path(config.streams[0].url.get_secret_value()).resolve() == ROOT / "samples" / "demo.mp4"


def test_env_expansion_with_defaults_and_secrets_kept_secret() -> None:
    text = """
vlm:
  base_url: ${VLM_URL:-http://gpu:8000/v1}
  api_key: ${VLM_API_KEY:-EMPTY}
streams:
  - name: front-door
    url: rtsp://user:${CAM_PASS}@192.0.2.10/stream1
    targets:
      - a person wearing a red shirt
      - {name: dog, description: a brown dog on the lawn}
alerts:
  - type: webhook
    url: https://hooks.example.com/cctv
    secret: ${WEBHOOK_SECRET}
"""
    env = {"CAM_PASS": "hunter2: x", "WEBHOOK_SECRET": "s3cr3t", "VLM_API_KEY": "key-123"}
    config = parse_config(text, "cfg.yaml", env)
    assert config.vlm.base_url == "http://gpu:8000/v1"
    assert config.vlm.api_key.get_secret_value() == "key-123"
    stream = config.streams[0]
    # The password's ': #' did not change the YAML's structure.
    assert stream.url.get_secret_value() == "rtsp://user:hunter2: x@192.0.2.10/stream1"
    assert [t.name for t in stream.targets] == ["a person wearing a red shirt", "dog"]
    assert stream.targets[1].prompt_text == "a brown dog on the lawn"
    dumped = repr(config) + str(config)
    for secret in ("hunter2", "s3cr3t", "key-123"):
        assert secret not in dumped
    assert "hunter2" not in stream.display_url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL + "bogus: 1\n", "cfg.yaml:5: bogus: unknown key"),
        (MINIMAL.replace("    targets", "    colour: red\n    targets"), "cfg.yaml:4: streams[0].colour: unknown key"),
        ("vlm:\n  max_concurrency: lots\n" + MINIMAL, "cfg.yaml:2: vlm.max_concurrency: Input should be a valid integer"),
        ("vlm:\n  max_concurrency: 0\n" + MINIMAL, "cfg.yaml:2: vlm.max_concurrency: Input should be greater than or equal to 1"),
        ("streams:\n  - name: cam\n    url: x.mp4\n", "cfg.yaml:2: streams[0].targets: Field required"),
        ("streams: []\n", "cfg.yaml:1: streams: List should have at least 1 item"),
        (MINIMAL + "alerts:\n  - type: smtp\n", "cfg.yaml:6: alerts[0]: Input tag 'smtp'"),
        (MINIMAL + "alerts:\n  - type: mqtt\n", "cfg.yaml:6: alerts[0].host: Field required"),
        (MINIMAL + "alerts:\n  - type: webhook\n    secret: x\n", "cfg.yaml:6: alerts[0].url: Field required"),
        (MINIMAL + "alerts:\n  - type: webhook\n    url: ftp://x\n", "cfg.yaml:7: alerts[0].url: Value error, must be an http"),
        (MINIMAL + "server:\n  listen: 9108\n", "cfg.yaml:6: server.listen:"),
        (MINIMAL + "server:\n  public_url: cameras.lan\n", "cfg.yaml:6: server.public_url: Value error, must be an http(s) URL"),
        (MINIMAL + "server:\n  public_url: https://a:b@cams.lan\n", "server.public_url: Value error, must not hold credentials"),
        (MINIMAL + MINIMAL[len("streams:\n"):].join(["", ""]), "duplicate"),
        ("streams:\n  - name: a\n    url: ${NOPE}\n    targets: [x]\n", "cfg.yaml:3: streams[0].url: environment variable NOPE is not set"),
        ("streams: [\n", "cfg.yaml:2: invalid YAML"),
        ("", "cfg.yaml: the file is empty"),
        ("- a\n- b\n", "cfg.yaml:1: the top level must be a mapping"),
        ("streams:\n  - name: bad name!\n    url: x\n    targets: [x]\n", "cfg.yaml:2: streams[0].name: String should match pattern"),
    ],
)
def test_errors_name_the_key_path_and_line(text: str, expected: str) -> None:
    assert expected in error_of(text)


def test_duplicate_stream_names_are_rejected() -> None:
    text = MINIMAL + "  - name: cam\n    url: other.mp4\n    targets: [x]\n"
    assert error_of(text) == "cfg.yaml:5: streams[1].name: duplicate stream name 'cam'"


def test_duplicate_keys_are_rejected() -> None:
    assert "cfg.yaml:3: vlm.model: duplicate key" in error_of("vlm:\n  model: a\n  model: b\n" + MINIMAL)


def test_error_never_echoes_a_secret_value() -> None:
    text = MINIMAL + "vlm:\n  api_key: {nested: s3cr3t-value}\n"
    message = error_of(text)
    assert "vlm.api_key" in message
    assert "s3cr3t-value" not in message


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:pw@10.0.0.5:554/live?token=abc") == "rtsp://***@10.0.0.5:554/live?…"
    assert redact_url("/var/videos/a.mp4") == "/var/videos/a.mp4"
    assert redact_url("rtsp://u:p#w/d@cam/s") == "rtsp://***@cam/s"
    assert redact_url("https://hooks.example.com/x") == "https://hooks.example.com/x"


def test_check_config_cli(tmp_path: Path) -> None:
    ok = cli("check-config", str(ROOT / "config" / "example.yaml"))
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.replace("    targets", "    pasword: hunter2\n    targets"))
    result = cli("check-config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == f"vlm-monitor: error: {bad}:4: streams[0].pasword: unknown key"
    assert "Traceback" not in result.stderr

    missing = cli("check-config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert "no such file" in missing.stderr and "Traceback" not in missing.stderr


def test_check_config_hides_camera_passwords(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("vlm: {base_url: 'http://bob:${CAM_PASS}@gpu:8000/v1'}\n"
                   "streams:\n  - name: cam\n    url: rtsp://admin:${CAM_PASS}@192.0.2.1/s\n    targets: [x]\n")
    result = cli("check-config", str(cfg), env={"CAM_PASS": "hunter2"})
    assert result.returncode == 0, result.stderr
    assert "rtsp://***@192.0.2.1/s" in result.stdout and "http://***@gpu:8000/v1" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


def test_systemd_credentials_fill_unset_variables(tmp_path: Path) -> None:
    (tmp_path / "VLM_API_KEY").write_text("from-credential\n")
    text = MINIMAL + "vlm:\n  api_key: ${VLM_API_KEY}\n"
    config = parse_config(text, "cfg.yaml", {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert config.vlm.api_key.get_secret_value() == "from-credential"
    # The environment wins over a credential of the same name.
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path), "VLM_API_KEY": "from-env"}
    assert parse_config(text, "cfg.yaml", env).vlm.api_key.get_secret_value() == "from-env"


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))


@pytest.mark.parametrize(("text", "expected"), [
    (LAUGHS + MINIMAL, "more than 100,000 values"),
    ("a: &a [*a]\n" + MINIMAL, "nested deeper than 32 levels"),
    ("a: " + "[" * 3000 + "]" * 3000 + "\n" + MINIMAL, "nested too deeply"),
    ("a: " + "{b: " * 3000 + "1" + "}" * 3000 + "\n" + MINIMAL, "nested too deeply"),
    ("? [a, b]\n: 1\n" + MINIMAL, "mapping keys must be plain values"),
])
def test_hostile_yaml_is_one_line_and_exit_2(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    # Before the bounds, the billion laughs took >5 GB and a minute; the others a RecursionError.
    result = cli("check-config", str(path), timeout=30)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_a_huge_config_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(MINIMAL + "# " + "x" * 2_000_000 + "\n")
    assert "larger than 1,000,000 bytes" in error_of_file(path)


def error_of_file(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    return str(e.value)


def test_a_sinks_identity_follows_where_it_delivers_not_its_position() -> None:
    def names(*hooks: str) -> list[str]:
        alerts = "".join(f"  - {{type: webhook, url: '{h}'}}\n" for h in hooks)
        return parse_config(MINIMAL + "alerts:\n  - {type: log}\n" + alerts, "c", {}).sink_names()

    before = names("https://a.example/hook?token=s3cret")
    after = names("https://new.example/x", "https://a.example/hook?token=s3cret")
    # Pending deliveries stored under the old name still reach the same receiver.
    assert before[1] == after[2] and after[1] != before[1]
    assert before[0] == "log" and all("s3cret" not in n and "example" not in n for n in after)
    named = parse_config(MINIMAL + "alerts:\n  - {type: webhook, name: chat, url: 'https://x/y'}\n",
                         "c", {}).sink_names()
    assert named == ["chat"]


def test_the_readmes_config_reference_is_a_valid_config() -> None:
    """The README's full example stays in step with the schema (a placeholder hash aside)."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("## Config reference", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    block = re.sub(r'password_hash: "scrypt\$[^"]*"', f'password_hash: "{hash_password("x" * 8, n=2**10)}"',
                   block)
    config = parse_config(block, "README.md", {"CAM_PASS": "p", "WEBHOOK_SECRET": "s", "MQTT_PASSWORD": "m",
                                               "VLM_API_KEY": "k"})
    assert config.timezone == "Europe/Berlin" and config.server.users[0].name == "ops"
    target = config.streams[0].targets[2]
    assert target.zones == ["gate"] and target.verify and len(target.rules()) == 2
