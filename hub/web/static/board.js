// The rooms board: live from server-sent events. Every value is set with
// textContent (never as HTML markup), so nothing a room publishes becomes markup.
"use strict";
(function () {
  const board = document.getElementById("board");
  if (!board) return;
  const feedState = document.getElementById("feed-state");
  const SVG = "http://www.w3.org/2000/svg";

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function num(v, digits) {
    return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : null;
  }
  function mmss(s) {
    s = Math.max(0, Math.round(s));
    return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  }
  function sparkline(values) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 120 28");
    svg.setAttribute("aria-hidden", "true");
    const pts = [];
    const good = values.filter((v) => typeof v === "number");
    if (good.length > 1) {
      const lo = Math.min(...good), hi = Math.max(...good);
      const span = hi - lo || 1;
      values.forEach((v, i) => {
        if (typeof v !== "number") return;
        const x = (i / Math.max(1, values.length - 1)) * 118 + 1;
        const y = 26 - ((v - lo) / span) * 24;
        pts.push(x.toFixed(1) + "," + y.toFixed(1));
      });
    }
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.appendChild(line);
    return svg;
  }
  function room(r) {
    const s = el("section", "room" + (r.online ? "" : " offline"));
    s.dataset.key = r.key;
    s.setAttribute("aria-label", "room " + r.key);
    s.appendChild(el("h2", null, r.key));
    const link = r.online ? "live" : (r.offline_since ? "offline since " + r.offline_since : "offline");
    s.appendChild(el("p", "link", link));
    const phase = [r.engine_state, r.phase, r.step].filter(Boolean).join(" · ") || "no state yet";
    s.appendChild(el("p", "phase", phase));
    if (typeof r.countdown_s === "number") {
      const c = el("p", "countdown value", mmss(r.countdown_s));
      c.setAttribute("aria-label", "remaining " + mmss(r.countdown_s));
      s.appendChild(c);
    }
    const supply = num(r.supply_kpa, 0);
    const sp = el("p", "value supply");
    sp.appendChild(el("span", null, "supply "));
    sp.appendChild(supply === null ? el("span", "invalid", r.supply_validity || "no data") : el("span", null, supply + " kPa"));
    s.appendChild(sp);
    const probes = el("ul", "probes");
    (r.probes || []).forEach((p) => {
      const li = el("li", "probe");
      li.dataset.probe = p.probe;
      li.appendChild(el("span", null, "probe " + p.probe));
      const tip = num(p.tip_c, 1);
      li.appendChild(tip === null ? el("span", "tip invalid", p.tip_validity || "no data") : el("span", "tip", tip + " °C"));
      li.appendChild(sparkline(p.trend || []));
      probes.appendChild(li);
    });
    s.appendChild(probes);
    const alarms = el("ul", "alarms");
    (r.alarms || []).forEach((a) => {
      const li = el("li", "prio-" + a.priority, a.priority + ": " + a.code + (a.message ? " — " + a.message : ""));
      alarms.appendChild(li);
    });
    s.appendChild(alarms);
    const l = r.link || {};
    const health = l.connected === false ? "console link DOWN" : "console link " + (l.connected ? "up" : "unknown");
    const counts = ["timeouts", "retries", "reconnects"].filter((k) => typeof l[k] === "number").map((k) => k + " " + l[k]).join(", ");
    s.appendChild(el("p", "linkhealth", health + (counts ? " (" + counts + ")" : "")));
    return s;
  }
  function render(doc) {
    const frag = document.createDocumentFragment();
    if (!doc.rooms.length) frag.appendChild(el("p", null, "No room has published yet."));
    doc.rooms.forEach((r) => frag.appendChild(room(r)));
    board.replaceChildren(frag);
    if (feedState) {
      feedState.textContent = doc.feed === null ? "No broker configured: nothing live." : (doc.feed ? "" : "The collector's telemetry subscription is down.");
    }
  }
  const source = new EventSource(board.dataset.events);
  source.onmessage = (ev) => {
    try { render(JSON.parse(ev.data)); } catch (e) { /* a malformed event changes nothing */ }
  };
  source.addEventListener("expired", () => {
    source.close();
    if (feedState) feedState.textContent = "Your session ended: log in again to keep the board live.";
  });
})();
