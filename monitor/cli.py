"""The ``vlm-monitor`` command: run, check-config, scan, probe, eval, hash-password.

Every failure the user can cause ends in one line on stderr and an exit code;
a traceback appears only with VLM_MONITOR_DEBUG=1.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from pydantic import SecretStr

from monitor import __version__, logs, malloc
from monitor.app import EXIT_FAILED, EXIT_USAGE, Daemon, DaemonError
from monitor.config import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    Config,
    ConfigError,
    DetectionConfig,
    PreprocessConfig,
    Target,
    VlmConfig,
    load_config,
)
from monitor.evaluate import EvalError, evaluate, load_suite, report
from monitor.metrics import Metrics
from monitor.passwords import hash_password
from monitor.preprocess import prepare
from monitor.scan import EXIT_ERROR, Report, ScanError, exit_code, progress_stream, scan
from monitor.shards import Shard, ShardError, parse_shard
from monitor.sources.base import SourceError
from monitor.sources.clips import ClipOrder
from monitor.urls import redact_url
from monitor.vlm import Endpoint, VlmClient, VlmError


def fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"vlm-monitor: error: {message}", file=sys.stderr, flush=True)
    return code


# --- run ---------------------------------------------------------------------

async def _run_daemon(config: Config, path: str, shard: Shard | None) -> int:
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    daemon = Daemon(config, config_path=Path(path), shard=shard)

    def on_signal() -> None:
        if shutdown.is_set() and main_task is not None:
            main_task.cancel()  # a second signal: do not wait out the grace period
        shutdown.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
    try:
        return await daemon.run(shutdown)
    except asyncio.CancelledError:
        return 130


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        shard = parse_shard(args.shard, socket.gethostname()) if args.shard else None
    except ShardError as e:
        return fail(str(e))
    logs.configure(config.logging.level, config.logging.format, stream=sys.stdout)
    try:
        return asyncio.run(_run_daemon(config, args.config, shard))
    except DaemonError as e:
        return fail(str(e), e.code)


# --- check-config --------------------------------------------------------------

def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    streams = ", ".join(f"{s.name} ({s.display_url})" for s in config.streams)
    print(f"{args.file}: valid; {len(config.streams)} stream(s): {streams}; "
          f"model {config.vlm.model} at {redact_url(config.vlm.base_url)}")
    return 0


# --- scan --------------------------------------------------------------------------

def cmd_scan(args: argparse.Namespace) -> int:
    logs.configure("warning", "auto", stream=sys.stderr)
    if not args.find.strip():
        return fail("--find must describe a target")
    if not 0 < args.interval <= 3600:
        return fail("--interval must be between 0 and 3600 seconds")
    if args.clip and not (0 <= args.clip_before <= 600 and 0 < args.clip_after <= 600):
        return fail("--clip-before must be 0 to 600 seconds and --clip-after more than 0, at most 600")
    try:
        # One endpoint, named as a lone base_url is, whose limit may be "auto".
        vlm = VlmConfig.model_validate({
            "model": args.model, "api_key": SecretStr(os.environ.get("VLM_API_KEY", "EMPTY")),
            "timeout_seconds": args.timeout, "max_retries": args.retries,
            "endpoints": [{"name": "default", "base_url": args.base_url,
                           "max_concurrency": args.concurrency}]})
        detection = DetectionConfig(min_confidence=args.min_confidence,
                                    consecutive_matches=args.consecutive)
        pre = PreprocessConfig(clahe=not args.no_clahe, max_pixels=args.max_pixels)
    except ValueError as e:  # pydantic's ValidationError
        first = str(e).splitlines()
        return fail(f"bad option: {first[1] if len(first) > 1 else first[0]}")
    report = Report(sys.stdout, args.json, progress_stream(),
                    every_line=args.verbose or not sys.stdout.isatty())
    target = Target(name=args.find, description=args.find)
    try:
        # The clip's window, relative to the first appearance (scan adds it).
        clip = ClipOrder("scan", -args.clip_before, args.clip_after, args.clip) if args.clip else None
        outcome = asyncio.run(scan(args.video, target, vlm, detection, pre, report,
                                   interval=args.interval, clip=clip))
    except (ScanError, SourceError) as e:
        return fail(str(e), EXIT_ERROR)
    code = exit_code(outcome)
    if code == EXIT_ERROR:
        fail(f"{outcome.unknown} of {outcome.samples} samples could not be analysed, "
             "so 'not found' is not certain", EXIT_ERROR)
    return code


# --- probe ----------------------------------------------------------------------

async def _probe_one(client: VlmClient, endpoint: Endpoint) -> tuple[bool, str]:
    status = await client.check(endpoint)
    if not status.usable:
        return False, status.reason or "not usable"
    # One real round trip: a red square on grey, which any VLM should see.
    image = np.full((448, 448, 3), 128, np.uint8)
    cv2.rectangle(image, (150, 150), (300, 300), (0, 0, 230), -1)
    prepared = prepare(image, max_pixels=448 * 448, clahe=False)
    start = time.perf_counter()
    try:
        analysis = await client.ask(endpoint, prepared.jpeg, ["a red square"])
    except VlmError as e:
        return False, str(e)
    took = time.perf_counter() - start
    sees = "sees" if analysis.verdicts[0].present else "does NOT see"
    return True, (f"model {endpoint.model} at {redact_url(endpoint.base_url)} answered in {took:.2f} s "
                  f"({analysis.prompt_tokens} prompt tokens, max_model_len "
                  f"{status.max_model_len or 'unknown'}); it {sees} the red test square")


async def _probe(cfg: VlmConfig) -> list[tuple[str, bool, str]]:
    """Each endpoint: its name, whether it is usable, and what was found, in one line."""
    client = VlmClient(cfg, Metrics())
    try:
        return [(e.name, *await _probe_one(client, e)) for e in client.endpoints]
    finally:
        await client.close()


def cmd_probe(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    results = asyncio.run(_probe(config.vlm))
    named = config.vlm.endpoints is not None
    for name, ok, message in results:
        if ok:
            print(f"ok: {name + ': ' if named else ''}{message}")
    failed = [(name, message) for name, ok, message in results if not ok]
    if failed:
        return fail("; ".join(f"model server {name + ' ' if named else ''}not usable: {message}"
                              for name, message in failed))
    return 0


# --- entry point ------------------------------------------------------------------

# --- eval --------------------------------------------------------------------------

def cmd_eval(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    suite = load_suite(Path(args.suite))
    clips = Path(args.clips) if args.clips else None
    if clips is not None:
        try:
            clips.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            return fail(f"--clips {clips}: {e.strerror or e}")
    logs.configure("warning", config.logging.format, stream=sys.stderr)
    try:
        results = asyncio.run(evaluate(config, suite, clips))
    except (EvalError, DaemonError) as e:
        return fail(str(e))
    print(report(results, suite))
    if clips is not None:
        print(f"clips: {sum(r.clips for r in results)} kept in {clips}")
    return 0 if all(s.holds for s in results[0].per_case) else 1


# --- hash-password ---------------------------------------------------------------

def cmd_hash_password(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            return fail("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")  # one line, as `echo pw |` sends it
    if len(password) < 8:
        return fail("the password is shorter than 8 characters")
    print(hash_password(password))
    return 0


def _concurrency(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a number, or auto") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vlm-monitor",
        description="Watch cameras and recordings with a vision-language model.")
    p.add_argument("--version", action="version", version=f"vlm-monitor {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", required=True, metavar="FILE")
    run.add_argument("--shard", metavar="I/N", default=os.environ.get("VLM_MONITOR_SHARD"),
                     help="run only this replica's share of the streams (I from 0, or ordinal/N: "
                     "I from the host name's trailing number); default: $VLM_MONITOR_SHARD")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file (exit 0 valid, 2 not)")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=cmd_check_config)

    sc = sub.add_parser("scan", help="find when a target first appears in a recording "
                        "(exit 0 found, 1 not found, 2 error)")
    sc.add_argument("video", metavar="VIDEO")
    sc.add_argument("--find", required=True, metavar="TEXT", help="what to look for")
    sc.add_argument("--base-url", default=os.environ.get("VLM_BASE_URL", DEFAULT_BASE_URL),
                    help="OpenAI-compatible API (default: $VLM_BASE_URL or %(default)s)")
    sc.add_argument("--model", default=os.environ.get("VLM_MODEL", DEFAULT_MODEL))
    sc.add_argument("--json", action="store_true", help="one JSON object per line")
    sc.add_argument("--verbose", "-v", action="store_true",
                    help="on a terminal too, a line per sample (piped output always has them)")
    sc.add_argument("--interval", type=float, default=1.0, help="seconds of video per sample")
    sc.add_argument("--min-confidence", type=int, default=7)
    sc.add_argument("--consecutive", type=int, default=2)
    sc.add_argument("--concurrency", type=_concurrency, default="auto",
                    help="requests in flight: a number, or auto (default: as many as the server "
                    "answers without slowing down)")
    sc.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    # A recording has no stale frames, so a failed request is worth more tries than live.
    sc.add_argument("--retries", type=int, default=3, help="retries per failed request")
    sc.add_argument("--max-pixels", type=int, default=PreprocessConfig().max_pixels)
    sc.add_argument("--no-clahe", action="store_true")
    sc.add_argument("--clip", metavar="FILE.mp4",
                    help="when found, also write the recording's clip of it here (no re-encoding)")
    sc.add_argument("--clip-before", type=float, default=5.0, metavar="SECONDS",
                    help="the clip starts this long before the first appearance (default 5)")
    sc.add_argument("--clip-after", type=float, default=10.0, metavar="SECONDS",
                    help="and ends this long after it (default 10)")
    sc.set_defaults(func=cmd_scan)

    pr = sub.add_parser("probe", help="check the model server named in the config")
    pr.add_argument("--config", required=True, metavar="FILE")
    pr.set_defaults(func=cmd_probe)

    ev = sub.add_parser("eval", help="replay labelled recordings against the model server and score "
                        "the alerts (exit 0 all expectations hold, 1 not, 2 error)")
    ev.add_argument("suite", metavar="SUITE.yaml")
    ev.add_argument("--config", required=True, metavar="FILE",
                    help="the model server, detection and preprocessing to use")
    ev.add_argument("--clips", metavar="DIR", help="keep each alert's clip here, named by variant, "
                    "case, second first seen and whether it was right (clips: in the config sets "
                    "their seconds before and after)")
    ev.set_defaults(func=cmd_eval)

    hp = sub.add_parser("hash-password", help="read a console password on stdin, print its hash "
                        "for server.users[].password_hash")
    hp.set_defaults(func=cmd_hash_password)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Two arenas, before any thread (see monitor.malloc); the fixed mmap threshold only
    # where capture threads run in this process (Daemon._capture).
    malloc.tune(mmap_threshold=None)
    # Frames and streams are already processed in parallel by our worker threads;
    # OpenCV's own thread pool on top only adds CPU (measured: one decoder thread per stream
    # costs the least CPU-seconds per stream-minute; more threads only lower wall time).
    cv2.setNumThreads(1)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if os.environ.get("VLM_MONITOR_DEBUG"):
            raise
        return fail(f"internal error: {type(e).__name__}: {e} "
                    "(set VLM_MONITOR_DEBUG=1 for a traceback)", EXIT_FAILED)
