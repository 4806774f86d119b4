// vlm-monitor console: plain JavaScript, no build step, nothing from the internet.
// Every page reads the JSON API documented in the README ("Console and its API").
"use strict";

const state = { csrf: null, user: null, loginRequired: false, shard: null, live: null, timers: [], fleet: null };

// --- small helpers ---------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(path, options = {}) {
  const opts = { credentials: "same-origin", ...options, headers: { ...(options.headers || {}) } };
  if (opts.method && opts.method !== "GET") opts.headers["X-CSRF-Token"] = state.csrf || "";
  if (opts.json !== undefined) {
    opts.body = JSON.stringify(opts.json);
    opts.headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, opts);
  if (res.status === 401 && path !== "/api/login") { showLogin(); throw new Error("log in first"); }
  const data = res.headers.get("Content-Type", "").includes("json") ? await res.json() : null;
  if (!res.ok) throw new Error((data && data.error) || `HTTP ${res.status}`);
  return data;
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }

function clock(seconds) {
  const s = Math.floor(seconds);
  const mm = String(Math.floor(s / 60) % 60).padStart(2, "0"), ss = String(s % 60).padStart(2, "0");
  return s >= 3600 ? `${Math.floor(s / 3600)}:${mm}:${ss}` : `${Math.floor(s / 60)}:${ss}`;
}

function verdictLine(v) {
  let cls = "unknown", label = "—";
  if (v.present !== null && v.present !== undefined) {
    cls = v.match ? "match" : "nomatch";
    label = v.match ? "MATCH" : v.present ? "unsure" : "no";
  }
  return h("div", { class: "verdict" },
    h("span", { class: `chip ${cls}` }, label),
    h("span", {}, v.target),
    v.confidence !== null && v.confidence !== undefined ? h("span", { class: "muted" }, `${v.confidence}/10`) : null,
    v.streak ? h("span", { class: "muted streak" }, `· ${v.streak}`) : null);
}

function every(ms, fn) { fn(); state.timers.push(setInterval(fn, ms)); }

function stopPage() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  if (state.live) { state.live.close(); state.live = null; }
}

function setMain(...children) {
  const main = document.getElementById("main");
  main.replaceChildren(...children);
  return main;
}

// --- session ---------------------------------------------------------------------------

async function loadSession() {
  const s = await api("/api/session");
  state.loginRequired = s.login_required;
  state.user = s.user;
  state.csrf = s.csrf_token || null;
  state.shard = s.shard || null;
  return !!state.csrf;
}

function showWho() {
  const who = document.getElementById("who");
  document.getElementById("nav").hidden = !state.csrf;
  if (!state.csrf) { who.replaceChildren(); return; }
  who.replaceChildren(state.user ? h("span", {}, state.user) : h("span", { class: "muted" }, "this machine only"));
  if (state.shard) who.prepend(h("span", { class: "badge", id: "shard", title: "this replica's share of the cameras" }, `shard ${state.shard}`));
  if (state.loginRequired) who.append(h("button", { onclick: logout, id: "logout" }, "Log out"));
}

async function logout() {
  await api("/api/logout", { method: "POST" });
  state.csrf = null;
  showLogin();
}

function showLogin(message) {
  stopPage();
  clearInterval(state.fleet);
  state.fleet = null;
  document.getElementById("fleet").hidden = true;
  state.csrf = null;
  showWho();
  const error = h("p", { class: "error", id: "login-error" }, message || "");
  const form = h("form", { id: "login" },
    h("input", { name: "name", placeholder: "name", autocomplete: "username", required: true }),
    h("input", { name: "password", type: "password", placeholder: "password",
                 autocomplete: "current-password", required: true }),
    h("button", { class: "primary", type: "submit" }, "Log in"), error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    try {
      const r = await api("/api/login", { method: "POST", json: { name: data.get("name"), password: data.get("password") } });
      state.csrf = r.csrf_token;
      state.user = r.user;
      state.shard = r.shard || null;
      state.loginRequired = true;
      showWho();
      route();
    } catch (err) { error.textContent = err.message; }
  });
  setMain(h("div", { class: "login card" }, h("div", { class: "body" }, h("h1", {}, "Log in"), form)));
}

// --- the fleet header, on every page ---------------------------------------------------

function link(filter, text, cls) {
  return h("a", { href: `#/cameras?filter=${filter}`, class: cls || null, "data-fleet": filter }, text);
}

function renderFleet(f) {
  const bar = document.getElementById("fleet");
  const keeping = f.judged_per_second >= 0.97 * f.due_per_second;
  bar.replaceChildren(
    h("span", { class: "group" }, link("all", `${f.cameras} cameras`), " · ",
      link("all", `${f.up} up`), " · ", link("down", `${f.down} down`, f.down ? "bad" : null),
      f.starting ? [" · ", link("all", `${f.starting} starting`)] : null, " · ",
      link("behind", `${f.behind} behind`, f.behind ? "warn" : null), " · ",
      link("matching", `${f.matching} matching`, f.matching ? "bad" : null)),
    h("span", { class: `group ${keeping ? "" : "warn"}`, id: "fleet-rate",
                title: "samples judged (asked or reused) a second over the last minute, against those due" },
      `${f.judged_per_second} of ${f.due_per_second} samples/s judged`),
    h("span", { class: "group" }, f.model_servers.map((m) =>
      h("span", { class: `server ${m.up ? "up" : "down"}`, "data-server": m.name },
        `model ${m.name}: ${m.up ? "up" : "down"}`))),
    h("a", { href: "#/events", class: `group ${f.alerts_pending ? "warn" : ""}`, id: "fleet-pending" },
      `${f.alerts_pending} alerts pending`));
  bar.hidden = false;
}

function startFleet() {
  if (state.fleet) return;
  const tick = async () => {
    try { renderFleet(await api("/api/fleet")); } catch (err) { /* the page says why */ }
  };
  tick();
  state.fleet = setInterval(tick, 2000);
}

// --- Cameras ---------------------------------------------------------------------------

const FRAMES_PER_SECOND = 10; // new tile pictures a page fetches, all tiles together

function tile(cam) {
  const img = cam.frame !== null
    ? h("img", { src: `/api/cameras/${encodeURIComponent(cam.name)}/frame.jpg?f=${cam.frame}`,
                 alt: `last frame judged on ${cam.name}`, loading: "lazy" })
    : h("div", { class: "noimg" }, "no frame judged yet");
  const search = [cam.name, ...cam.targets.map((t) => t.target)].join("\n").toLowerCase();
  return h("div", { class: "card tile", "data-camera": cam.name, "data-state": cam.state,
                    "data-matching": String(cam.matching), "data-behind": String(cam.behind !== null),
                    "data-off": String(cam.off_schedule), "data-search": search },
    h("a", { href: `#/camera/${encodeURIComponent(cam.name)}` }, img),
    h("div", { class: "body" },
      h("h3", {}, h("a", { href: `#/camera/${encodeURIComponent(cam.name)}` }, cam.name),
        h("span", { class: "marks" },
          cam.matching ? h("span", { class: "badge match", title: "a target is in view" }, "match") : null,
          cam.behind !== null ? h("span", { class: "badge behind", title: cam.behind }, "behind") : null,
          h("span", { class: `badge ${cam.state}` }, cam.state))),
      cam.state !== "up" && cam.reason ? h("div", { class: "reason" }, cam.reason) : null,
      cam.behind !== null ? h("div", { class: "reason behind" }, `behind: ${cam.behind}`) : null,
      cam.off_schedule ? h("div", { class: "muted detail" }, "off schedule: no target is watched now") : null,
      h("div", { class: "detail" }, cam.targets.map((t) => h("div", {},
        verdictLine(t),
        t.description ? h("div", { class: "desc" }, t.description) : null,
        t.at ? h("div", { class: "desc" }, `${ago(t.at)} · ${t.asked ? "asked" : "reused (scene unchanged)"}`) : null))),
      h("div", { class: "stats detail" },
        h("span", {}, `frame ${cam.frame_at ? ago(cam.frame_at) : "—"}`),
        h("span", {}, `${cam.samples_per_minute} samples/min`),
        h("span", {}, `${cam.model_calls_per_minute} model calls/min`))));
}

// What needs attention first: down, then matching now, then behind, then the rest; by name.
function rank(el) {
  const d = el.dataset;
  return d.state === "down" ? 0 : d.matching === "true" ? 1 : d.behind === "true" ? 2 : 3;
}

const FILTERS = {
  all: () => true,
  down: (d) => d.state === "down",
  matching: (d) => d.matching === "true",
  behind: (d) => d.behind === "true",
  off: (d) => d.off === "true",
};

// The Cameras page's view, kept in the URL (#/cameras?view=compact&filter=down&q=door) so a
// link shows the same view; the grid's size is also remembered by the browser.
function cameraView() {
  const query = new URLSearchParams(location.hash.split("?")[1] || "");
  const filter = FILTERS[query.get("filter")] ? query.get("filter") : "all";
  const view = ["large", "compact"].includes(query.get("view")) ? query.get("view")
    : localStorage.getItem("vlm.view") === "compact" ? "compact" : "large";
  return { view, filter, q: query.get("q") || "" };
}

function setCameraView(v) {
  const query = new URLSearchParams();
  query.set("view", v.view);
  if (v.filter !== "all") query.set("filter", v.filter);
  if (v.q) query.set("q", v.q);
  history.replaceState(null, "", `#/cameras?${query}`);
  localStorage.setItem("vlm.view", v.view);
}

function showCameras() {
  const v = cameraView();
  const grid = h("div", { class: `grid ${v.view === "compact" ? "compact" : ""}`, id: "cameras" });
  const search = h("input", { type: "search", id: "camera-search", placeholder: "camera or target", value: v.q,
                              "aria-label": "search cameras and targets" });
  const chip = (name, label) => h("button", { type: "button", "data-filter": name,
                                              class: v.filter === name ? "on" : "" }, label);
  const filters = h("div", { class: "chips", role: "group", "aria-label": "show" },
    chip("all", "All"), chip("down", "Down"), chip("matching", "Matching now"), chip("behind", "Behind"),
    chip("off", "Off schedule"));
  const views = h("div", { class: "chips", role: "group", "aria-label": "grid" },
    h("button", { type: "button", "data-view": "large", class: v.view === "large" ? "on" : "" }, "Large"),
    h("button", { type: "button", "data-view": "compact", class: v.view === "compact" ? "on" : "" }, "Compact"));
  const shown = h("span", { class: "muted", id: "shown" });
  setMain(h("div", { class: "toolbar" }, h("h1", {}, "Cameras"), search, filters, views, shown), grid);
  const apply = () => {
    const q = v.q.trim().toLowerCase();
    let count = 0;
    for (const el of grid.children) {
      el.hidden = !(FILTERS[v.filter](el.dataset) && (!q || el.dataset.search.includes(q)));
      if (!el.hidden) count += 1;
    }
    shown.textContent = `${count} of ${grid.children.length}`;
    for (const b of filters.children) b.classList.toggle("on", b.dataset.filter === v.filter);
    for (const b of views.children) b.classList.toggle("on", b.dataset.view === v.view);
    grid.classList.toggle("compact", v.view === "compact");
  };
  const change = (patch) => { Object.assign(v, patch); setCameraView(v); apply(); };
  filters.addEventListener("click", (e) => { if (e.target.dataset.filter) change({ filter: e.target.dataset.filter }); });
  views.addEventListener("click", (e) => { if (e.target.dataset.view) change({ view: e.target.dataset.view }); });
  search.addEventListener("input", () => change({ q: search.value }));
  const tiles = new Map();
  // Only tiles on screen fetch their new frames (the others load lazily when scrolled to),
  // and a page fetches at most FRAMES_PER_SECOND of them: with a hundred tiles on screen
  // each picture is renewed every ~10 s instead of every second (200 requests a second
  // from two browsers), while the verdicts and badges still change with every sample.
  const onScreen = new Set();
  const fetchedAt = new Map();
  const due = (name) => performance.now() - (fetchedAt.get(name) || 0)
    >= Math.max(1000, (onScreen.size * 1000) / FRAMES_PER_SECOND);
  const observer = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (e.isIntersecting) onScreen.add(e.target.dataset.camera); else onScreen.delete(e.target.dataset.camera);
    }
  });
  const live = new EventSource("/api/cameras/live");
  state.live = { close: () => { live.close(); observer.disconnect(); } };
  live.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    for (const cam of msg.cameras) {
      const fresh = tile(cam);
      const old = tiles.get(cam.name);
      const oldImg = old && old.querySelector("img");
      const newImg = fresh.querySelector("img");
      // Swap the picture only once the new one has loaded: no flashing tiles.
      if (oldImg && newImg && oldImg.src !== newImg.src && onScreen.has(cam.name) && due(cam.name)) {
        fetchedAt.set(cam.name, performance.now());
        newImg.replaceWith(oldImg.cloneNode());
        const loader = new Image();
        loader.onload = () => { const shown = fresh.querySelector("img"); if (shown) shown.src = loader.src; };
        loader.src = newImg.src;
      } else if (oldImg && newImg) {
        newImg.replaceWith(oldImg);
      }
      if (old) { observer.unobserve(old); old.replaceWith(fresh); } else grid.append(fresh);
      observer.observe(fresh);
      tiles.set(cam.name, fresh);
    }
    for (const [name, el] of tiles) {
      if (!msg.names.includes(name)) { observer.unobserve(el); el.remove(); tiles.delete(name); onScreen.delete(name); }
    }
    const order = [...tiles.values()].sort((a, b) => rank(a) - rank(b) ||
      a.dataset.camera.localeCompare(b.dataset.camera));
    order.forEach((el, i) => { if (grid.children[i] !== el) grid.insertBefore(el, grid.children[i] || null); });
    apply();
  };
  live.onerror = async () => {
    if (live.readyState === EventSource.CLOSED) {
      try { await loadSession(); } catch (err) { /* shown by api() */ }
    }
  };
}

// --- a camera's recent samples ----------------------------------------------------------

function showCamera(name) {
  const head = h("div", {});
  const body = h("tbody", {});
  setMain(h("p", {}, h("a", { href: "#/cameras" }, "← Cameras")), h("h1", {}, name, " — recent samples"), head,
    h("table", { id: "samples" }, h("thead", {}, h("tr", {}, h("th", {}, "frame"), h("th", {}, "when"),
      h("th", {}, "outcome"), h("th", {}, "verdicts"))), body));
  every(2000, async () => {
    const data = await api(`/api/cameras/${encodeURIComponent(name)}/samples?limit=300`);
    const cam = data.camera;
    head.replaceChildren(h("p", {}, h("span", { class: `badge ${cam.state}` }, cam.state), " ",
      cam.state !== "up" ? cam.reason : "", " · ",
      `${cam.samples_per_minute} samples/min, ${cam.model_calls_per_minute} model calls/min`),
      cam.behind !== null ? h("p", { class: "reason behind", id: "behind" }, `Behind: ${cam.behind}`) : null,
      cam.off_schedule ? h("p", { class: "muted" }, "Off schedule: no target is watched now.") : null,
      h("div", { id: "streaks" }, cam.targets.map((t) => verdictLine(t))));
    body.replaceChildren(...data.samples.map((row) => h("tr", { "data-outcome": row.outcome },
      h("td", {}, row.thumb ? h("img", { src: `/api/cameras/${encodeURIComponent(name)}/thumbs/${row.seq}.jpg`, alt: "" }) : ""),
      h("td", {}, ago(row.at), row.offset !== null ? h("div", { class: "muted" }, `${row.offset.toFixed(1)} s`) : null),
      h("td", {}, row.outcome === "dropped"
        ? h("span", { class: "error" }, `dropped${row.count > 1 ? ` ×${row.count}` : ""}: ${row.reason}`)
        : row.outcome === "reused" ? "reused (scene unchanged)" : "asked"),
      h("td", {}, row.verdicts.map((v) => h("div", {}, verdictLine(v),
        v.description ? h("div", { class: "desc" }, v.description) : null))))));
  });
}

// --- Events ----------------------------------------------------------------------------

function deliveryLine(d) {
  let text = d.state;
  if (d.state === "pending" && d.next_attempt) text += `, next try ${ago(new Date(d.next_attempt * 1000).toISOString()).replace(" ago", "")}`;
  if (d.state !== "delivered" && d.error) text += ` (${d.error})`;
  return h("li", {}, `${d.sink}: `, h("span", { class: `state-${d.state}` }, text));
}

// What an alert shows: its clip (the snapshot, box drawn, as the poster) once written, else the
// snapshot; a clip the browser cannot play (H.265 in most) says so and offers the download.
function eventMedia(ev) {
  const snapshot = ev.snapshot ? h("img", { src: ev.snapshot, alt: `snapshot of ${ev.stream}` }) : h("div", { class: "muted" }, "no snapshot");
  const kept = { class: "media", "data-snapshot": ev.snapshot || "" };
  if (!ev.clip) {
    return h("div", kept, snapshot,
      ev.clip_state === "expired" ? h("div", { class: "muted clip-state" }, "clip expired") : null);
  }
  const note = h("div", { class: "muted clip-state" }, h("a", { href: ev.clip, download: `${ev.stream}-${ev.id}.mp4` }, "download clip"));
  const video = h("video", { src: ev.clip, controls: "", preload: "metadata", playsinline: "", muted: "", ...(ev.snapshot ? { poster: ev.snapshot } : {}) });
  video.addEventListener("error", () => {
    video.replaceWith(snapshot);
    note.prepend("This browser cannot play this clip (H.265?) — ");
  });
  return h("div", kept, video, note);
}

function eventCard(ev) {
  const isAlert = ev.event === "target_detected";
  if (ev.event === "clip_ready") {
    return h("div", { class: "card event", "data-id": ev.id, "data-event": ev.event, "data-stream": ev.stream },
      h("div", {}),
      h("div", {},
        h("h3", {}, "clip ready", h("span", { class: "muted" }, ` · ${ev.stream}`)),
        h("div", { class: "muted" }, `${ev.target || ""}: ${ev.duration_seconds} s from before it was first seen ${ev.first_seen ? `(${when(ev.first_seen)})` : ""}`),
        ev.clip_note ? h("div", { class: "muted" }, ev.clip_note) : null,
        h("div", { class: "deliveries" }, ev.deliveries.length ? h("ul", {}, ev.deliveries.map(deliveryLine)) : h("span", { class: "muted" }, "no sink takes this event"))));
  }
  const buttons = isAlert ? h("div", { class: "actions" },
    h("button", { class: `good ${ev.feedback === "right" ? "on" : ""}`, "data-verdict": "right", onclick: () => judge(ev, "right", card) }, "Right"),
    h("button", { class: `bad ${ev.feedback === "false_alarm" ? "on" : ""}`, "data-verdict": "false_alarm", onclick: () => askLesson(ev, card) }, "False alarm"),
    h("span", { class: "muted feedback" }, ev.feedback ? `marked ${ev.feedback.replace("_", " ")}` : "not judged yet")) : null;
  const title = isAlert ? `${ev.target}` : ev.event.replace("_", " ");
  const card = h("div", { class: "card event", "data-id": ev.id, "data-event": ev.event, "data-stream": ev.stream },
    isAlert ? eventMedia(ev) : ev.snapshot ? h("img", { src: ev.snapshot, alt: `snapshot of ${ev.stream}` }) : h("div", { class: "muted" }, "no snapshot"),
    h("div", {},
      h("h3", {}, title, h("span", { class: "muted" }, ` · ${ev.stream}`)),
      h("div", { class: "muted" }, isAlert ? `first seen ${when(ev.first_seen)} (${ago(ev.first_seen)})` : `${when(ev.at)} — ${ev.reason || ""}`),
      isAlert ? h("div", {}, `confidence ${ev.confidence}/10 — `, h("span", { class: "desc" }, ev.description || "")) : null,
      ev.model ? h("div", { class: "muted" }, `model ${ev.model}`) : null,
      h("div", { class: "deliveries" }, ev.deliveries.length ? h("ul", {}, ev.deliveries.map(deliveryLine)) : h("span", { class: "muted" }, "no sink takes this event")),
      buttons));
  return card;
}

// A false alarm teaches the model only the text the operator keeps here: the model's own
// description (the scene's words) is offered, never learnt unseen.
function askLesson(ev, card) {
  const text = h("input", { type: "text", name: "lesson", maxlength: "120", value: (ev.description || "").slice(0, 120) });
  const form = h("form", { class: "lesson" },
    h("label", {}, "From now on, tell the model this is not the target (edit it, or clear it to teach nothing):", text),
    h("button", { type: "submit", class: "bad" }, "Mark false alarm"),
    h("button", { type: "button", onclick: () => card.replaceWith(eventCard(ev)) }, "Cancel"));
  form.addEventListener("submit", (e) => { e.preventDefault(); judge(ev, "false_alarm", card, text.value); });
  card.querySelector(".actions").replaceWith(form);
  text.focus();
}

async function judge(ev, verdict, card, lesson = "") {
  try {
    await api(`/api/events/${ev.id}/feedback`, { method: "POST", json: { verdict, lesson } });
    ev.feedback = verdict;
    card.replaceWith(eventCard(ev));
  } catch (err) { alert(err.message); }
}

async function showEvents() {
  const cameras = await api("/api/cameras");
  const form = h("form", { class: "filters", id: "event-filters" },
    h("label", {}, "camera", h("select", { name: "stream" }, h("option", { value: "" }, "all"),
      cameras.map((c) => h("option", { value: c.name }, c.name)))),
    h("label", {}, "target", h("input", { name: "target", placeholder: "any" })),
    h("label", {}, "event", h("select", { name: "event" }, h("option", { value: "" }, "all"),
      ["target_detected", "target_cleared", "stream_down", "stream_up", "clip_ready"].map((e) => h("option", { value: e }, e)))),
    h("label", {}, "from", h("input", { name: "since", type: "datetime-local" })),
    h("label", {}, "until", h("input", { name: "until", type: "datetime-local" })),
    h("button", { type: "submit", class: "primary" }, "Show"));
  const list = h("div", { class: "stack", id: "events" });
  const more = h("button", { id: "more", hidden: true }, "Older events");
  setMain(h("h1", {}, "Events"), form, list, h("p", {}, more));
  let before = null, newest = null;
  function query() {
    const data = new FormData(form);
    const q = new URLSearchParams({ limit: "30" });
    for (const k of ["stream", "target", "event"]) if (data.get(k)) q.set(k, data.get(k));
    for (const k of ["since", "until"]) if (data.get(k)) q.set(k, String(Date.parse(data.get(k)) / 1000));
    return q;
  }
  async function load(reset) {
    const q = query();
    if (reset) { before = null; newest = null; list.replaceChildren(); }
    if (before !== null) q.set("before", String(before));
    const events = await api(`/api/events?${q}`);
    if (reset && !events.length) list.append(h("p", { class: "muted", id: "no-events" }, "No events."));
    list.append(...events.map(eventCard));
    before = events.length ? events[events.length - 1].seq : before;
    if (reset && events.length) newest = events[0].seq;
    more.hidden = events.length < 30;
  }
  // New events appear at the top as they are raised.
  async function refresh() {
    const q = query();
    if (newest !== null) q.set("after", String(newest));
    const events = await api(`/api/events?${q}`);
    if (!events.length) return;
    const empty = document.getElementById("no-events");
    if (empty) empty.remove();
    list.prepend(...events.map(eventCard));
    // A clip written since: its alert's card shows it now (unless it came with its clip).
    for (const ev of events.filter((e) => e.event === "clip_ready")) {
      const card = list.querySelector(`.event[data-id="${ev.alert_id}"]`);
      const media = card && card.querySelector(".media");
      if (media && !media.querySelector("a[download]")) {
        media.replaceWith(eventMedia({ ...ev, id: ev.alert_id, snapshot: media.dataset.snapshot || null,
                                       clip: `/api/events/${ev.alert_id}/clip.mp4` }));
      }
    }
    newest = events[0].seq;
    if (before === null) before = events[events.length - 1].seq;
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load(true); });
  more.addEventListener("click", () => load(false));
  await load(true);
  state.timers.push(setInterval(refresh, 3000));
}

// --- Scan ------------------------------------------------------------------------------

function stripClass(row) {
  const vs = row.verdicts;
  if (vs.some((v) => v.match)) return "s-match";
  if (vs.some((v) => v.error)) return "s-error";
  if (vs.some((v) => v.present)) return "s-unsure";
  return "s-no";
}

function showScanForm() {
  const file = h("input", { type: "file", name: "video", accept: "video/*", id: "video" });
  const drop = h("div", { class: "drop", id: "drop" }, "Drop a recording here, or ", file);
  const targets = h("textarea", { name: "targets", rows: 3, id: "targets", placeholder: "one target per line, e.g. a person wearing a red shirt" });
  const error = h("p", { class: "error", id: "scan-error" });
  const start = h("button", { class: "primary", id: "start" }, "Start");
  const bar = h("div", { class: "progress", hidden: true }, h("div", {}));
  let chosen = null;
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files.length) { chosen = e.dataTransfer.files[0]; drop.firstChild.textContent = `${chosen.name} — `; }
  });
  file.addEventListener("change", () => { chosen = file.files[0] || null; });
  start.addEventListener("click", () => {
    error.textContent = "";
    if (!chosen) { error.textContent = "Choose a recording first."; return; }
    const form = new FormData();
    form.append("targets", targets.value);
    form.append("video", chosen, chosen.name);
    // XMLHttpRequest, for the upload's own progress.
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/scans");
    xhr.setRequestHeader("X-CSRF-Token", state.csrf || "");
    bar.hidden = false;
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.firstChild.style.width = `${100 * e.loaded / e.total}%`; };
    xhr.onload = () => {
      bar.hidden = true;
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch (err) { /* not JSON */ }
      if (xhr.status === 202) { location.hash = `#/scan/${data.id}`; return; }
      if (xhr.status === 401) { showLogin(); return; }
      error.textContent = (data && data.error) || `upload failed (HTTP ${xhr.status})`;
    };
    xhr.onerror = () => { bar.hidden = true; error.textContent = "upload failed: the connection was closed (too large?)"; };
    xhr.send(form);
  });
  const queue = h("tbody", {});
  setMain(h("h1", {}, "Scan a recording"),
    h("div", { class: "card" }, h("div", { class: "body stack" }, drop,
      h("label", {}, "What to find", h("br"), targets), h("div", {}, start), bar, error)),
    h("h2", {}, "Scans"), h("table", { id: "scans" }, h("thead", {}, h("tr", {}, h("th", {}, "recording"),
      h("th", {}, "targets"), h("th", {}, "status"), h("th", {}, "first detection"))), queue));
  every(2000, async () => {
    const scans = await api("/api/scans");
    queue.replaceChildren(...scans.map((s) => h("tr", {},
      h("td", {}, h("a", { href: `#/scan/${s.id}` }, s.name)), h("td", {}, s.targets.join("; ")),
      h("td", {}, `${s.status}${s.status === "running" ? ` ${Math.round(100 * s.progress)}%` : ""}`),
      h("td", {}, s.first_detection_seconds === null ? "—" : clock(s.first_detection_seconds)))));
  });
}

function showScan(id) {
  const title = h("h1", {}, "Scan");
  const status = h("p", { id: "scan-status" });
  const bar = h("div", { class: "progress", id: "scan-progress" }, h("div", {}));
  const strip = h("div", { class: "strip", id: "strip" });
  const found = h("div", { class: "found", id: "found" });
  const stop = h("button", { id: "stop" }, "Stop");
  const rows = h("tbody", {});
  setMain(h("p", {}, h("a", { href: "#/scan" }, "← Scans")), title, status, bar, h("p", {}, stop),
    h("h2", {}, "Along the recording"), strip, found,
    h("table", { id: "scan-rows" }, h("thead", {}, h("tr", {}, h("th", {}, "frame"), h("th", {}, "second"),
      h("th", {}, "verdicts"))), rows));
  stop.addEventListener("click", () => api(`/api/scans/${id}/stop`, { method: "POST" }));
  let since = 0;
  const samples = [];
  const timer = setInterval(update, 1000);
  state.timers.push(timer);
  update();
  async function update() {
    let s;
    try {
      s = await api(`/api/scans/${id}?since=${since}`);
    } catch (e) {  // an unknown or removed scan: say so once, and stop asking
      clearInterval(timer);
      status.textContent = `${e.message}`;
      return;
    }
    title.textContent = `Scan of ${s.name}`;
    for (const row of s.samples) {
      samples.push(row);
      rows.prepend(h("tr", { "data-second": row.second },
        h("td", {}, row.thumb ? h("img", { src: `/api/scans/${id}/thumbs/${samples.length - 1}.jpg`, alt: "" }) : ""),
        h("td", {}, clock(row.second)),
        h("td", {}, row.verdicts.map((v) => h("div", {}, verdictLine(v),
          v.description || v.error ? h("div", { class: "desc" }, v.description || v.error) : null)))));
    }
    since = s.sample_count;
    const length = s.duration ? Math.ceil(s.duration) : samples.length;
    if (strip.childElementCount !== length) {
      strip.replaceChildren(...Array.from({ length }, () => h("span", {})));
    }
    samples.forEach((row, i) => {
      const cell = strip.children[Math.floor(row.second)] || strip.children[i];
      if (cell) { cell.className = stripClass(row); cell.title = `${clock(row.second)}`; }
    });
    bar.firstChild.style.width = `${100 * s.progress}%`;
    status.textContent = `${s.status} — ${clock(s.analysed)} analysed` +
      (s.duration ? ` of ${clock(s.duration)}` : "") + ` — targets: ${s.targets.join("; ")}` +
      (s.error ? ` — ${s.error}` : "");
    stop.disabled = !["queued", "running"].includes(s.status);
    if (s.first_detection_seconds !== null) {
      const i = samples.findIndex((r) => r.second === s.first_detection_seconds);
      found.replaceChildren(
        i >= 0 && samples[i].thumb ? h("img", { src: `/api/scans/${id}/thumbs/${i}.jpg`, alt: "first detection" }) : "",
        h("div", {}, h("strong", { id: "first-detection" }, `First seen at ${clock(s.first_detection_seconds)} (${s.first_detection_seconds} s)`),
          Object.entries(s.first_detection_by_target).map(([t, sec]) => h("div", { class: "muted" }, `${t}: ${clock(sec)}`))));
    } else if (!["queued", "running"].includes(s.status)) {
      found.replaceChildren(h("strong", { id: "first-detection" }, "Not found in this recording."));
    }
    if (!["queued", "running"].includes(s.status)) clearInterval(timer);
  }
}

// --- routing ---------------------------------------------------------------------------

async function route() {
  stopPage();
  if (!state.csrf) {
    try {
      if (!(await loadSession())) { showLogin(); return; }
    } catch (err) {
      if (err.message !== "log in first") setMain(h("p", { class: "error" }, err.message));
      return;
    }
  }
  showWho();
  startFleet();
  const [page, arg] = (location.hash.replace(/^#\//, "").split("?")[0] || "cameras").split("/");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  try {
    if (page === "camera" && arg) showCamera(decodeURIComponent(arg));
    else if (page === "events") await showEvents();
    else if (page === "scan" && arg) showScan(arg);
    else if (page === "scan") showScanForm();
    else showCameras();
  } catch (err) {
    if (err.message !== "log in first") setMain(h("p", { class: "error" }, err.message));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
