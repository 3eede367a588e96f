// Service views: the forwarding queue (engineers retry, administrators release quarantine) and
// the audit trail (administrators). A technologist sees neither; the API refuses them too.
"use strict";

(async () => {
  const { api, el, $, toast } = dx;
  const me = await dx.session();
  dx.header(me);
  if (!dx.allows(me.role, "engineer")) {
    $("refused").classList.remove("hidden");
    return;
  }
  $("admin-main").classList.remove("hidden");
  const isAdmin = dx.allows(me.role, "admin");
  if (!isAdmin) {
    $("audit-panel").remove();
    document.querySelector("[aria-label='Forwarding queue']").classList.add("wide");
  }

  async function act(uid, destination, what) {
    try {
      await api(`/api/queue/${encodeURIComponent(uid)}/${what}?destination=${encodeURIComponent(destination)}`,
        { method: "POST" });
      toast(`${what === "retry" ? "Retrying" : "Released"}: ${destination}`, "info");
    } catch (exc) {
      toast(`${what} refused: ${exc.message}`);
    }
    await loadQueue();
  }

  async function loadQueue() {
    const state = $("queue-state").value;
    const rows = await api("/api/queue?limit=500" + (state ? "&state=" + state : ""));
    $("queue").replaceChildren(...rows.map((d) => el("tr", { "data-uid": d.sop_instance_uid },
      el("td", {}, d.sop_instance_uid), el("td", {}, d.destination), el("td", {}, d.state),
      el("td", {}, d.attempts), el("td", {}, d.last_error || ""),
      el("td", {},
        d.state === "pending" ? el("button", { type: "button", onclick: () => act(d.sop_instance_uid, d.destination, "retry") }, "Retry now") : null,
        d.state === "quarantined" && isAdmin ? el("button", { type: "button", class: "release", onclick: () => act(d.sop_instance_uid, d.destination, "release") }, "Release") : null))));
    if (!rows.length) $("queue").append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "Nothing in this state.")));
  }

  const OUTCOME = { 0: "success", 4: "minor failure", 8: "serious failure", 12: "major failure" };

  async function loadAudit() {
    const rows = await api("/api/audit?limit=300");
    $("audit").replaceChildren(...rows.map((a) => el("tr", {},
      el("td", {}, new Date(a.ts * 1000).toLocaleString()), el("td", {}, a.event), el("td", {}, a.user || ""),
      el("td", {}, OUTCOME[a.outcome] ?? a.outcome), el("td", {}, a.sent_at ? "sent" : "—"))));
  }

  // calibration: the engineer prepares the detector, starts, watches the progress, sees the new
  // set's maps and QA figures, then accepts it (it is used from the next exposure) or discards it
  const steps = await api("/api/console/calibration-steps");
  $("cal-steps").replaceChildren(...steps.map((s) => el("li", {}, s.instruction)));
  $("cal-ready").addEventListener("change", () => { $("cal-start").disabled = !$("cal-ready").checked; });
  let calTimer = 0;
  let pendingId = "";
  let decided = "";
  const pct = (c) => (/nonuniformity|deviation|fraction/.test(c.name) ? (100 * c.value).toFixed(3) + " %" : String(c.value));
  const pctLimit = (c) => (/nonuniformity|deviation|fraction/.test(c.name) ? (100 * c.limit).toFixed(3) + " %" : String(c.limit));
  function showPending(p) {
    $("cal-pending").classList.toggle("hidden", !p);
    if (!p) { pendingId = ""; return; }
    if (p.calibration_id === pendingId) return;
    pendingId = p.calibration_id;
    $("cal-pending-id").textContent = p.calibration_id;
    $("cal-map-offset").src = p.pictures.offset;
    $("cal-map-gain").src = p.pictures.gain;
    $("cal-map-defects").src = p.pictures.defects;
    $("cal-qa-chart").src = p.pictures.qa;
    const qa = p.qa || { passed: false, checks: [] };
    $("cal-qa-result").textContent = p.qa ? (qa.passed ? "PASS" : "FAIL") : "not measured";
    $("cal-qa-result").className = qa.passed ? "pass" : "error";
    $("cal-qa").replaceChildren(...qa.checks.map((c) => el("tr", { "data-check": c.name },
      el("td", {}, c.name), el("td", {}, pct(c)), el("td", {}, pctLimit(c)),
      el("td", { class: c.passed ? "pass" : "error" }, c.passed ? "pass" : "FAIL"))));
  }
  async function loadCalibration() {
    clearTimeout(calTimer);
    const job = await api("/api/calibration");
    $("cal-state").textContent = job.state;
    $("cal-step").textContent = job.step ? `${job.step} ${job.done}/${job.total}` : "";
    $("cal-progress").max = Math.max(1, job.total);
    $("cal-progress").value = job.done;
    showPending(job.state === "running" ? null : job.pending);
    $("cal-result").textContent = decided
      || (job.state === "failed" ? `Calibration failed: ${job.error}. The previous calibration stays in use.`
        : job.pending && job.state !== "running" ? `New calibration ${job.pending.calibration_id} is pending: check it, then accept or discard.`
          : job.state === "done" ? `New calibration ${job.calibration_id} is in use.` : "");
    $("cal-result").className = job.state === "failed" ? "error" : "";
    $("cal-start").disabled = job.state === "running" || !$("cal-ready").checked;
    if (job.state === "running") calTimer = setTimeout(loadCalibration, 300);
  }
  async function decide(what) {
    const id = pendingId;
    try {
      await api(`/api/calibration/${what}`, { method: "POST", body: { calibration_id: id } });
      decided = what === "accept" ? `New calibration ${id} is in use.`
        : `Calibration ${id} discarded; the previous calibration stays in use.`;
    } catch (exc) {
      toast(`${what === "accept" ? "Accept" : "Discard"} refused: ${exc.message}`);
    }
    await loadCalibration();
  }
  $("cal-accept").addEventListener("click", () => decide("accept"));
  $("cal-discard").addEventListener("click", () => decide("discard"));
  $("cal-start").addEventListener("click", async () => {
    decided = "";
    try {
      await api("/api/calibration", { method: "POST", body: { pending: true } });
    } catch (exc) {
      toast("Calibration refused: " + exc.message);
    }
    $("cal-ready").checked = false;
    await loadCalibration();
  });
  await loadCalibration();

  // reject analysis (TG-305) and EI/DI statistics (TG-151) per body part and view, with CSV exports
  const fmt = (v, digits, unit = "") => (v === null || v === undefined ? "—" : v.toFixed(digits) + unit);
  async function loadStats() {
    const days = $("stats-period").value;
    const query = days ? "?since=" + (Date.now() / 1000 - Number(days) * 86400).toFixed(0) : "";
    $("stats-csv").href = "/api/console/review-stats.csv" + query;
    $("reviews-csv").href = "/api/console/reviews.csv" + query;
    const data = await api("/api/console/review-stats" + query);
    const label = Object.fromEntries(data.reasons.map((r) => [r.code, r.label]));
    $("stats").replaceChildren(...data.stats.map((s) => el("tr", { "data-view": `${s.body_part} ${s.view_position}` },
      el("td", {}, s.body_part), el("td", {}, s.view_position), el("td", {}, s.images), el("td", {}, s.rejected),
      el("td", { class: "reject-rate" }, fmt(s.reject_rate_pct, 1, " %")),
      el("td", {}, Object.entries(s.rejects_by_reason).map(([k, n]) => `${label[k] || k}: ${n}`).join(", ")),
      el("td", {}, fmt(s.ei_median, 0)), el("td", { class: "di-mean" }, fmt(s.di_mean, 2)), el("td", {}, fmt(s.di_sd, 2)),
      el("td", {}, fmt(s.di_within_05_pct, 0, " %")), el("td", {}, fmt(s.di_within_1_pct, 0, " %")))));
    if (!data.stats.length) $("stats").append(el("tr", {}, el("td", { colspan: 11, class: "muted" }, "No judged images in this period.")));
  }
  $("stats-period").addEventListener("change", loadStats);
  $("stats-reload").addEventListener("click", loadStats);
  await loadStats();

  // detector diagnostics: the panel, the calibration set in use, the frame counters
  const age = (s) => (s === null || s === undefined ? "—" : s < 3600 ? `${(s / 60).toFixed(0)} min`
    : s < 172800 ? `${(s / 3600).toFixed(1)} h` : `${(s / 86400).toFixed(1)} days`);
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
  const shown = (v) => (v === null || v === undefined || v === "" ? "—" : String(v));
  function pairs(id, rows) {
    $(id).replaceChildren(...rows.flatMap(([label, value, key, tone]) => [
      el("dt", {}, label), el("dd", { "data-key": key, "data-tone": tone }, shown(value))]));
  }
  async function loadDiagnostics() {
    const d = await api("/api/console/diagnostics");
    const det = d.detector;
    pairs("diag-detector", [
      ["Model", `${det.vendor} ${det.model}`, "model"], ["Serial", det.serial, "serial"],
      ["Firmware", det.firmware, "firmware"], ["Mode", det.mode, "mode"],
      ["Panel state", det.state + (det.error ? ` (${det.error})` : ""), "state", det.error ? "bad" : undefined],
      ["Exposure", det.exposure_state, "exposure-state"],
      ["Temperature", det.temperature_c === null ? null : `${det.temperature_c.toFixed(1)} °C`, "temperature",
        det.over_temperature ? "bad" : undefined],
      ["Battery", det.battery_percent === null ? null : `${det.battery_percent} %`, "battery"],
      ["Link quality", det.link_quality_percent === null ? null : `${det.link_quality_percent} %`, "link"]]);
    const cal = d.calibration;
    const drift = cal.drift_c;
    const driftTone = drift === null || drift === undefined ? undefined
      : cal.max_drift_c && Math.abs(drift) >= cal.max_drift_c ? "bad"
        : cal.warn_drift_c && Math.abs(drift) >= cal.warn_drift_c ? "warn" : undefined;
    pairs("diag-calibration", cal.valid ? [
      ["Calibration", cal.calibration_id, "calibration-id"], ["Calibrated", when(cal.calibrated_at), "calibrated-at"],
      ["Age", age(cal.age_s), "age"], ["At temperature", `${cal.temperature_c.toFixed(1)} °C`, "cal-temperature"],
      ["Drift now", drift === null ? null : `${drift >= 0 ? "+" : ""}${drift.toFixed(1)} °C (warns at ±${cal.warn_drift_c} °C)`,
        "drift", driftTone],
      ["Sensitivity", `${cal.counts_per_ugy} counts/µGy`, "sensitivity"],
      ["Last offset refresh", cal.offset_refreshed_at ? when(cal.offset_refreshed_at) : "none since calibration",
        "offset-refresh"],
      ["Offset refresh", cal.offset_refresh_every_h ? `every ${cal.offset_refresh_every_h} h when idle` : "off",
        "offset-refresh-every"]]
      : [["Calibration", `none usable: ${cal.problem}`, "calibration-id", "bad"]]);
    const n = d.counters;
    pairs("diag-counters", [["Frames dropped", n.frames_dropped, "frames-dropped", n.frames_dropped ? "bad" : undefined],
      ["Frames recovered at start-up", n.frames_recovered, "frames-recovered"],
      ["Panel re-plugs", n.replugs, "replugs"], ["Raw frames kept", n.kept_frames, "kept-frames"]]);
    const counts = Object.entries(cal.defect_counts || {});
    $("diag-defects").replaceChildren(...counts.map(([k, v]) => el("tr", { "data-class": k }, el("td", {}, k), el("td", {}, v))));
    if (!counts.length) $("diag-defects").append(el("tr", {}, el("td", { colspan: 2, class: "muted" }, "—")));
  }
  $("diag-reload").addEventListener("click", loadDiagnostics);
  await loadDiagnostics();

  // QA reports (`dxgate qa`): the list, each page in a new tab, and each check's trend
  const isFraction = (name) => /nonuniformity|deviation|fraction/.test(name);
  const figure = (name, v) => (v === null || v === undefined ? "—"
    : isFraction(name) ? (100 * v).toFixed(3) + " %" : String(Number(v.toPrecision(5))));
  const SVG = $("svg-ns").namespaceURI;  // the page's own inline <svg> names the namespace
  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }
  // value / limit of each report as a line; the dashed line is the limit (1), red dots failed
  function sparkline(points) {
    const w = 220, h = 44, pad = 5;
    const ratios = points.map((p) => (p.limit > 0 ? p.value / p.limit : p.value > 0 ? 2 : 0));
    const top = Math.max(1.2, ...ratios);
    const x = (i) => pad + (points.length < 2 ? (w - 2 * pad) / 2 : (i * (w - 2 * pad)) / (points.length - 1));
    const y = (r) => h - pad - (r / top) * (h - 2 * pad);
    const chart = svg("svg", { width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img",
      "aria-label": "value / limit over the reports" });
    chart.append(svg("line", { x1: pad, x2: w - pad, y1: y(1), y2: y(1), stroke: "#d9a400", "stroke-dasharray": "4 3" }));
    chart.append(svg("polyline", { points: ratios.map((r, i) => `${x(i)},${y(r)}`).join(" "), fill: "none",
      stroke: "#6fb3ff", "stroke-width": 1.5 }));
    ratios.forEach((r, i) => chart.append(svg("circle", { cx: x(i), cy: y(r), r: 2.5,
      fill: points[i].passed ? "#7ee08a" : "#ff5c5c", "data-passed": points[i].passed })));
    return chart;
  }
  async function loadQa() {
    const data = await api("/api/console/qa");
    $("qa-reports").replaceChildren(...data.reports.map((r) => {
      const failed = r.checks.filter((c) => !c.passed).map((c) => c.name);
      return el("tr", { "data-report": r.id, "data-passed": r.passed },
        el("td", {}, when(r.made_at)), el("td", {}, r.detector_serial), el("td", {}, r.mode),
        el("td", {}, r.calibration_id), el("td", { class: r.passed ? "pass result" : "error result" }, r.passed ? "PASS" : "FAIL"),
        el("td", {}, figure("", r.figures.mean_signal)), el("td", {}, figure("", r.figures.mean_noise)),
        el("td", {}, figure("", r.figures.mean_snr)), el("td", {}, figure("defect fraction", r.defect_fraction)),
        el("td", {}, r.largest_cluster), el("td", {}, failed.join(", ") || "—"),
        el("td", {}, r.page ? el("a", { href: r.page, target: "_blank", rel: "noopener noreferrer", class: "button open-report" },
          "Open") : el("span", { class: "muted" }, "no page kept")));
    }));
    if (!data.reports.length) $("qa-reports").append(el("tr", {}, el("td", { colspan: 12, class: "muted" }, "No QA reports kept yet.")));
    const trend = await api(`/api/console/qa/trend?serial=${encodeURIComponent(data.detector_serial)}&mode=${encodeURIComponent(data.mode)}`);
    $("qa-trend-of").textContent = `${trend.detector_serial}, mode ${trend.mode}: ${trend.reports} report(s)`;
    $("qa-trend").replaceChildren(...trend.checks.map((t) => {
      const last = t.points[t.points.length - 1];
      return el("tr", { "data-check": t.name }, el("td", {}, t.name), el("td", { class: "limit" }, figure(t.name, t.limit)),
        el("td", { class: "values" }, t.points.map((p) => figure(t.name, p.value)).join(" → ")),
        el("td", { class: last.passed ? "pass" : "error" }, last.passed ? "pass" : "FAIL"), el("td", {}, sparkline(t.points)));
    }));
  }
  $("qa-reload").addEventListener("click", loadQa);
  await loadQa();
  $("config").textContent = JSON.stringify(await api("/api/console/config"), null, 2);

  // the configuration file: read-only for engineers; admins edit, check and save it (the daemon
  // reloads it) and see which changes took effect now and which need a restart
  async function loadConfigFile() {
    const file = await api("/api/console/config/file");
    $("config-path").textContent = file.path;
    $("config-text").value = file.text;
    $("config-text").readOnly = !file.editable;
    $("config-mode").textContent = file.editable ? "editable (administrator)" : "read-only";
    $("config-actions").classList.toggle("hidden", !file.editable);
  }
  async function saveConfigFile() {
    const out = $("config-result");
    out.className = "";
    try {
      const r = await api("/api/console/config/file", { method: "POST", body: { text: $("config-text").value } });
      const list = (xs) => (xs.length ? xs.join(", ") : "none");
      out.className = r.needs_restart.length ? "warn" : "ok";
      out.replaceChildren(
        el("p", { id: "config-applied" }, `Saved. Applied now: ${list(r.applied)}.`),
        el("p", { id: "config-restart" }, `Needs a restart: ${list(r.needs_restart)}.`),
        el("p", { class: "muted" }, `Daemon reload: ${r.reload}. The old file is kept as ${r.previous}.`));
      out.scrollIntoView({ block: "nearest" });
      await loadConfigFile();
      $("config").textContent = JSON.stringify(await api("/api/console/config"), null, 2);
    } catch (exc) {
      out.className = "error";
      out.replaceChildren(el("p", { id: "config-error" }, `Not saved: ${exc.message}`));
      out.scrollIntoView({ block: "nearest" });
    }
  }
  $("config-save").addEventListener("click", saveConfigFile);
  $("config-revert").addEventListener("click", () => { $("config-result").replaceChildren(); loadConfigFile(); });
  await loadConfigFile();

  $("queue-state").addEventListener("change", loadQueue);
  $("queue-reload").addEventListener("click", loadQueue);
  await loadQueue();
  if (isAdmin) {
    $("audit-reload").addEventListener("click", loadAudit);
    await loadAudit();
  }
  document.body.dataset.ready = "1";
})();
