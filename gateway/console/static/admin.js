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
  $("config").textContent = JSON.stringify(await api("/api/console/config"), null, 2);

  $("queue-state").addEventListener("change", loadQueue);
  $("queue-reload").addEventListener("click", loadQueue);
  await loadQueue();
  if (isAdmin) {
    $("audit-reload").addEventListener("click", loadAudit);
    await loadAudit();
  }
  document.body.dataset.ready = "1";
})();
