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

  // calibration: the engineer prepares the detector, starts, watches the progress, sees the result
  const steps = await api("/api/console/calibration-steps");
  $("cal-steps").replaceChildren(...steps.map((s) => el("li", {}, s.instruction)));
  $("cal-ready").addEventListener("change", () => { $("cal-start").disabled = !$("cal-ready").checked; });
  let calTimer = 0;
  async function loadCalibration() {
    clearTimeout(calTimer);
    const job = await api("/api/calibration");
    $("cal-state").textContent = job.state;
    $("cal-step").textContent = job.step ? `${job.step} ${job.done}/${job.total}` : "";
    $("cal-progress").max = Math.max(1, job.total);
    $("cal-progress").value = job.done;
    $("cal-result").textContent = job.state === "done" ? `New calibration ${job.calibration_id} is in use.`
      : job.state === "failed" ? `Calibration failed: ${job.error}. The previous calibration stays in use.` : "";
    $("cal-result").className = job.state === "failed" ? "error" : "";
    $("cal-start").disabled = job.state === "running" || !$("cal-ready").checked;
    if (job.state === "running") calTimer = setTimeout(loadCalibration, 300);
  }
  $("cal-start").addEventListener("click", async () => {
    try {
      await api("/api/calibration", { method: "POST" });
    } catch (exc) {
      toast("Calibration refused: " + exc.message);
    }
    $("cal-ready").checked = false;
    await loadCalibration();
  });
  await loadCalibration();

  $("queue-state").addEventListener("change", loadQueue);
  $("queue-reload").addEventListener("click", loadQueue);
  await loadQueue();
  if (isAdmin) {
    $("audit-reload").addEventListener("click", loadAudit);
    await loadAudit();
  }
  document.body.dataset.ready = "1";
})();
