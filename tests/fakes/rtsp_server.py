"""A real RTSP server (GStreamer's gst-rtsp-server) for the live-stream tests.

Run with the system Python, which has the GObject bindings:

    /usr/bin/python3 tests/fakes/rtsp_server.py PORT [--user U --password P] [--gop N]
                                               [--size WxH] [--pattern ball|smpte]
                                               [--bitrate KBITS]

It serves ``/live``: a 640x360 25 fps H.264 stream (x264, zerolatency, coded
as a camera codes, one keyframe every N frames) of a grey scene. Commands on
stdin, one per line: ``red`` / ``grey`` switch the picture (a red frame is
what the stand-in model calls "a person wearing a red shirt"), ``freeze`` /
``thaw`` stop and resume sending frames while the RTSP session stays open. It
prints ``ready`` once listening and ``ack <command>`` after each command.
"""

from __future__ import annotations

import argparse
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# Coded as an IP camera codes: High profile, CABAC and the deblocking filter. Without this
# line ultrafast sends Constrained Baseline without either, ~4x cheaper a keyframe to decode
# (720p: 0.5 against 2.2 ms); the rest of ultrafast keeps the live encode cheap at 1080p.
CAMERA_CODING = "cabac=1:deblock=1,0,0:8x8dct=1"

GREY = 0xFF7A7A7A
RED = 0xFFC81E1E


class Factory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, gop: int, size: str = "640x360", pattern: str = "solid-color",
                 bitrate: int | None = None, codec: str = "h264") -> None:
        super().__init__()
        self.codec = codec
        self.gop = gop
        self.bitrate = bitrate
        self.width, self.height = (int(v) for v in size.split("x"))
        self.pattern = pattern
        self.source: Gst.Element | None = None
        self.valve: Gst.Element | None = None
        self.colour = GREY
        self.set_shared(True)
        # Once primed, the shared stream stays prepared when its last client leaves: a crowd
        # of clients preparing it again at once was seen to crash this test server.
        self.set_stop_on_disconnect(False)

    def encoder(self, bitrate: int) -> str:
        if self.codec == "h265":
            # As an H.265 camera sends it: SPS/PPS/VPS repeated with every keyframe.
            return (f"x265enc tune=zerolatency speed-preset=ultrafast key-int-max={self.gop} "
                    f"bitrate={bitrate} ! video/x-h265,profile=main "
                    "! rtph265pay name=pay0 pt=96 config-interval=-1")
        return (f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={self.gop} "
                f"bitrate={bitrate} option-string={CAMERA_CODING} "
                "! video/x-h264,profile=high "
                "! rtph264pay name=pay0 pt=96 config-interval=1")

    def do_create_element(self, url: object) -> Gst.Element:
        # A flat or slow picture encodes to a fraction of any bitrate asked for (the ball:
        # ~0.19 Mbit/s); SMPTE bars sliding sideways are busy enough to use what is asked.
        moving = "horizontal-speed=4 " if self.pattern == "smpte" else ""
        bitrate = self.bitrate or max(800, self.width * self.height * 25 // 10000)
        pipeline = Gst.parse_launch(
            f"videotestsrc name=src is-live=true pattern={self.pattern} {moving}"
            f"foreground-color={self.colour} "
            f"! video/x-raw,format=I420,width={self.width},height={self.height},framerate=25/1 "
            "! valve name=valve drop=false ! "
            + self.encoder(bitrate))
        self.source = pipeline.get_by_name("src")
        self.valve = pipeline.get_by_name("valve")
        return pipeline


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--gop", type=int, default=25)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--pattern", default="solid-color",
                        help="videotestsrc pattern, e.g. ball, or smpte (then moving)")
    parser.add_argument("--bitrate", type=int, help="the encoder's target, kbit/s")
    parser.add_argument("--codec", choices=("h264", "h265"), default="h264")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = Factory(args.gop, args.size, args.pattern, args.bitrate, args.codec)
    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        permissions.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory("/live", factory)
    if server.attach(None) == 0:
        print("cannot listen", flush=True)
        sys.exit(1)

    loop = GLib.MainLoop()

    def apply(command: str) -> bool:
        if command in ("red", "grey"):
            factory.colour = RED if command == "red" else GREY
            if factory.source is not None:
                factory.source.set_property("foreground-color", factory.colour)
        elif command in ("freeze", "thaw") and factory.valve is not None:
            factory.valve.set_property("drop", command == "freeze")
        elif command == "quit":
            loop.quit()
        print(f"ack {command}", flush=True)
        return False

    def read_commands() -> None:
        for line in sys.stdin:
            GLib.idle_add(apply, line.strip())
        GLib.idle_add(loop.quit)

    threading.Thread(target=read_commands, daemon=True).start()
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
