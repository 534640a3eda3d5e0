"use strict";
(() => {
  const PERIOD_MS = 2000;
  const $ = (id) => document.getElementById(id);
  const count = new Intl.NumberFormat(undefined);
  const oneDecimal = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const TONES = {
    "running": "ok", "idle": "calm", "paused": "warn", "paused (concurrency 0)": "warn",
    "registry unavailable": "bad", "waiting for the writer": "warn", "waiting for a share": "calm",
    "draining": "warn", "stopped": "off",
    "closed": "ok", "half-open": "warn", "open": "bad",
  };
  let lastUpdate = null;
  let failingSince = null;

  // The page's own calls, relative to it (a proxy may serve it under a prefix), without the
  // user:password a login through the URL leaves in the page's address: fetch refuses URLs
  // holding credentials, and the browser sends the ones it logged in with by itself.
  const address = (path) => {
    const url = new URL(path, location.href);
    url.username = "";
    url.password = "";
    url.hash = "";
    url.search = "";
    return url.href;
  };

  const get = async (path) => {
    const answer = await fetch(address(path), {
      credentials: "same-origin", cache: "no-store", headers: { "Accept": "application/json" },
    });
    const body = await answer.text();
    let data = null;
    try { data = JSON.parse(body); } catch (_) { /* reported below */ }
    if (!answer.ok) {
      const error = new Error((data && data.error) || `HTTP ${answer.status}`);
      error.status = answer.status;
      throw error;
    }
    if (data === null) throw new Error(`${path} answered something unreadable`);
    return data;
  };

  const num = (n) => (n === null || n === undefined ? "–" : count.format(n));
  const set = (id, text, title) => {
    const el = $(id);
    el.textContent = text;
    if (title) el.title = title; else el.removeAttribute("title");
  };
  const tone = (id, word) => {
    const el = $(id);
    el.textContent = word;
    el.dataset.tone = TONES[word] || "off";
  };

  const UNITS = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  const bytes = (n) => {
    if (n < 1024) return `${count.format(n)} ${n === 1 ? "byte" : "bytes"}`;
    let value = n / 1024;
    let unit = 0;
    while (value >= 1024 && unit < UNITS.length - 1) { value /= 1024; unit += 1; }
    return `${oneDecimal.format(value)} ${UNITS[unit]}`;
  };

  const duration = (seconds) => {
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60), h = Math.floor(m / 60), d = Math.floor(h / 24);
    if (d > 0) return `${d} d ${h % 24} h`;
    if (h > 0) return `${h} h ${m % 60} min`;
    return `${m} min ${s % 60} s`;
  };

  const clock = (date) => date.toLocaleTimeString();

  const showProgress = (s) => {
    const bar = $("progress");
    const analysed = s.analysed;
    set("analysed", num(analysed));
    set("rate", `${oneDecimal.format(s.rate_per_s)} projects/s`);
    if (s.remaining === null || s.remaining === undefined) {
      bar.removeAttribute("value");
      bar.removeAttribute("aria-valuetext");
      set("total", "not counted yet");
      set("remaining", "–");
      set("eta", "–");
      set("progress-text", `${num(analysed)} projects analysed; the total is not counted yet`);
      return;
    }
    const total = analysed + s.remaining;
    // Floored, so that 99.96 % does not read as done.
    const percent = total === 0 ? 100 : Math.floor((analysed * 1000) / total) / 10;
    bar.max = Math.max(total, 1);
    bar.value = total === 0 ? 1 : analysed;
    const text = `${num(analysed)} of ${num(total)} projects analysed (${oneDecimal.format(percent)} %)`;
    bar.setAttribute("aria-valuetext", text);
    set("total", num(total));
    set("remaining", num(s.remaining));
    if (s.remaining === 0) set("eta", "done");
    else if (s.eta_s === null || s.eta_s === undefined) set("eta", "not known yet");
    else set("eta", duration(s.eta_s), `about ${Math.round(s.eta_s)} seconds`);
    set("progress-text", text);
    document.title = `${oneDecimal.format(percent)} % · ${s.state} · registry-repair`;
  };

  const showFleet = (fleet) => {
    const section = $("fleet");
    if (!fleet || fleet.members.length < 2) { section.hidden = true; return; }
    section.hidden = false;
    set("fleet-summary", `${num(fleet.live)} live, shares ${num(fleet.shares)} of ${num(fleet.total)}, ${num(fleet.in_flight)} in flight`);
    const rows = fleet.members.map((m) => {
      const tr = document.createElement("tr");
      if (m.id === fleet.me) tr.className = "me";
      if (!m.live) tr.className = "dead";
      const heartbeat = m.live
        ? `${oneDecimal.format(m.heartbeat_age_s)} s`
        : `dead ${Math.round(m.heartbeat_age_s)} s`;
      const state = m.id === fleet.me ? `${m.state} (this one)` : m.state;
      for (const cell of [m.id, num(m.share), num(m.in_flight), num(m.analysed), heartbeat, m.shard, state]) {
        const td = document.createElement("td");
        td.textContent = cell;
        tr.appendChild(td);
      }
      return tr;
    });
    $("fleet-members").replaceChildren(...rows);
  };

  const showStatus = (s) => {
    tone("state", s.state);
    set("work", s.work || "");
    showProgress(s);
    set("max-concurrency", num(s.max_concurrency));
    const fleetShare = s.share !== null && s.share !== undefined;
    set("max-concurrency-label", fleetShare ? "Max concurrency (the fleet's)" : "Max concurrency");
    $("share-row").hidden = !fleetShare;
    if (fleetShare) set("share", num(s.share));
    set("in-flight", num(s.in_flight));
    set("queued", num(s.queued));
    set("enabled", s.enabled ? "on" : "off (paused)");
    set("uptime", duration(s.uptime_s));
    tone("breaker", s.breaker);
    set("breaker-trips", num(s.breaker_trips));
    set("deferred", num(s.deferred));
    set("completed", num(s.completed));
    set("failed", num(s.failed));
    const lastError = $("last-error");
    lastError.textContent = s.last_error || "none";
    lastError.className = s.last_error ? "" : "none";
    showFleet(s.fleet);
  };

  const showDamage = (d) => {
    $("damage-figures").hidden = false;
    $("damage-error").hidden = true;
    set("damage-projects", num(d.projects));
    set("damage-repositories", num(d.repositories));
    set("damage-bytes", bytes(d.bytes), `${count.format(d.bytes)} bytes`);
    set("damage-unknown", num(d.unknown_sizes));
  };

  const damageFailed = (error) => {
    $("damage-figures").hidden = true;
    const p = $("damage-error");
    p.hidden = false;
    p.textContent = `No figures: ${error.message}`;
  };

  const connection = (toneWord, text) => {
    const el = $("connection");
    el.dataset.tone = toneWord;
    el.textContent = text;
  };

  const statusFailed = (error) => {
    const now = new Date();
    failingSince = failingSince || now;
    $("figures").classList.add("stale");
    if (!lastUpdate) tone("state", "unknown");
    const last = lastUpdate ? `; figures as of ${clock(lastUpdate)}` : "";
    if (error.status === 401) {
      connection("bad", `Not authorised: ${error.message}. Reload the page to log in${last}.`);
    } else if (error.status) {
      connection("bad", `The service answered an error since ${clock(failingSince)}: ${error.message}${last}`);
    } else {
      connection("bad", `Cannot reach the service since ${clock(failingSince)}${last}`);
    }
  };

  const refresh = async () => {
    const [status, damage] = await Promise.allSettled([get("status"), get("damage")]);
    if (status.status === "fulfilled") {
      showStatus(status.value);
      lastUpdate = new Date();
      failingSince = null;
      $("figures").classList.remove("stale");
      $("figures").removeAttribute("aria-busy");
      connection("ok", `Updated ${clock(lastUpdate)}`);
    } else {
      statusFailed(status.reason);
    }
    if (damage.status === "fulfilled") showDamage(damage.value);
    else if (status.status === "fulfilled") damageFailed(damage.reason);
    setTimeout(refresh, PERIOD_MS);
  };

  refresh();
})();
