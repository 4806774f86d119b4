"""The console's events: the alerts in the outbox with their deliveries, snapshots and clips,
and an operator's judgement of an alert (right, or a false alarm and what to learn from it)."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from monitor import logs
from monitor.alerts.outbox import Outbox
from monitor.alerts.snapshots import Snapshots
from monitor.console.auth import Session
from monitor.console.clips import ALERT_ID, ClipRoutes
from monitor.console.reading import SESSION_KEY, body_json, float_arg, int_arg, is_text
from monitor.console.replies import error, jpeg, reply
from monitor.feedback import VERDICTS, Feedback, Judgement
from monitor.metrics import Metrics
from monitor.prompts import LESSON_CHARS


class EventRoutes:
    def __init__(self, outbox: Outbox, snapshots: Snapshots | None, clips: ClipRoutes, feedback: Feedback,
                 metrics: Metrics) -> None:
        self.outbox = outbox
        self.snapshots = snapshots
        self.clips = clips
        self.feedback = feedback
        self.metrics = metrics
        self._log = logs.get("monitor.console")

    def add(self, r: web.UrlDispatcher) -> None:
        r.add_get("/api/events", self._events)
        r.add_get("/api/events/{id}/snapshot.jpg", self._snapshot)
        r.add_post("/api/events/{id}/feedback", self._judge)
        self.clips.add(r)

    async def _events(self, request: web.Request) -> web.Response:
        q = request.query
        events = await asyncio.to_thread(
            self.outbox.events, stream=q.get("stream") or None, target=q.get("target") or None,
            event=q.get("event") or None, since=float_arg(q.get("since")), until=float_arg(q.get("until")),
            before=int_arg(q.get("before"), None, 0, 2**62), after=int_arg(q.get("after"), None, 0, 2**62),
            limit=int_arg(q.get("limit"), 50, 1, 500))
        ids = [e.alert.id for e in events]
        judged = await asyncio.to_thread(self.feedback.of, ids)
        clips = await asyncio.to_thread(self._clip_states, ids)
        out = []
        for e in events:
            payload = e.alert.payload()
            snapshot = payload.pop("snapshot", None)
            payload.pop("clip_url", None)  # the signed link is for those without a session
            clip = clips.get(e.alert.id) if e.alert.event == "target_detected" else None
            out.append({**payload, "seq": e.seq, "created": e.created,
                        "snapshot": f"/api/events/{e.alert.id}/snapshot.jpg" if snapshot else None,
                        "clip": f"/api/events/{e.alert.id}/clip.mp4" if clip == "ready" else None,
                        "clip_state": clip,
                        "deliveries": e.deliveries, "feedback": judged.get(e.alert.id)})
        return reply(out)

    def _clip_states(self, ids: list[str]) -> dict[str, str]:
        """Blocking: which of these alerts have a clip on disk, or had one."""
        return self.clips.states(ids, self.outbox.clips_announced(ids))

    async def _snapshot(self, request: web.Request) -> web.Response:
        alert_id = request.match_info["id"]
        body = None
        if ALERT_ID.match(alert_id) and self.snapshots is not None:
            body = await asyncio.to_thread(self.snapshots.read, f"{alert_id}.jpg")
        if body is None:
            raise error(404, "no snapshot for this event")
        return jpeg(body)

    async def _judge(self, request: web.Request) -> web.Response:
        alert_id = request.match_info["id"]
        body = await body_json(request)
        verdict, lesson = body.get("verdict"), body.get("lesson", "")
        if verdict not in VERDICTS:
            raise error(400, f"verdict must be one of: {', '.join(VERDICTS)}")
        if not isinstance(lesson, str) or not is_text(lesson) or len(lesson) > LESSON_CHARS:
            raise error(400, f"lesson must be text of at most {LESSON_CHARS} characters")
        alert = await asyncio.to_thread(self.outbox.event, alert_id) if ALERT_ID.match(alert_id) else None
        if alert is None or alert.event != "target_detected":
            raise error(404, "no such alert")
        session: Session | None = request[SESSION_KEY]
        judgement = Judgement(alert.id, alert.stream, str(alert.fields["target"]), verdict,
                              str(alert.fields.get("description", "")), time.time(),
                              session.user if session else None, " ".join(lesson.split()))
        before = await asyncio.to_thread(self.feedback.judge, judgement)
        if before != verdict:
            self.metrics.feedback.labels(alert.stream, judgement.target, verdict).inc()
            if before is not None:
                self.metrics.feedback.labels(alert.stream, judgement.target, before).dec()
        self._log.info("alert judged", alert_id=alert.id, stream=alert.stream,
                       target=judgement.target, verdict=verdict, user=judgement.user)
        return reply({"id": alert.id, "feedback": verdict})
