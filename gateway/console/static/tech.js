// The technologist's screen: worklist, exam, view, the hand switch's release, preview and review,
// forwarding per destination. Live state comes from the daemon's event stream (no reloads).
"use strict";

(async () => {
  const { api, el, $, toast } = dx;
  const me = await dx.session();
  dx.header(me);
  const options = await api("/api/console/options");
  let exam = null; // GET /api/exam
  let shownUid = "";
  let newest = ""; // the newest image already shown once
  let forwarding = {};
  let forwardTimer = 0;
  let slowPolls = 0;
  let appliedView = "null"; // the exam's view as last shown in the fields
  let picked = []; // worklist entries ticked to open together, in the order ticked (the group case)
  let closed = []; // GET /api/exam/closed: exams closed lately (restarts included), newest first (the append case)

  // --- choices -----------------------------------------------------------------------------
  const bodyParts = new Map(options.body_parts.map((b) => [b.term, b]));
  $("protocol").append(el("option", { value: "" }, "—"),
    ...options.protocols.map((p, i) => el("option", { value: i }, p.name)));
  $("body-part").append(...options.body_parts.map((b) => el("option", { value: b.term }, b.meaning)));
  $("view-position").append(...options.views.map((v) => el("option", { value: v.term }, `${v.term} (${v.meaning})`)));
  $("laterality").append(el("option", { value: "" }, "none"),
    ...options.lateralities.map((l) => el("option", { value: l }, l)));
  $("reject-reason").append(...options.reject_reasons.map((r) => el("option", { value: r.code }, r.label)));

  function setFields(v) {
    $("body-part").value = v.body_part;
    $("view-position").value = v.view_position;
    $("laterality").value = v.laterality || "";
    $("kvp").value = v.kvp;
    $("mas").value = v.mas;
    $("target-ei").value = v.target_ei;
  }
  $("protocol").addEventListener("change", () => {
    const p = options.protocols[$("protocol").value];
    if (p) setFields(p);
  });
  $("body-part").addEventListener("change", () => {
    const paired = bodyParts.get($("body-part").value)?.paired;
    if (paired && !["R", "L", "B"].includes($("laterality").value)) $("laterality").value = "R";
    if (!paired) $("laterality").value = "";
  });
  setFields(options.protocols[0]);
  $("protocol").value = "0";

  function chosenView() {
    return {
      body_part: $("body-part").value, view_position: $("view-position").value,
      laterality: $("laterality").value || null, kvp: Number($("kvp").value), mas: Number($("mas").value),
      target_ei: Number($("target-ei").value),
    };
  }

  // --- DI bands (AAPM Report 116; the gateway's table) --------------------------------------
  function band(di) {
    if (di === null || di === undefined) return { name: "unknown", meaning: "not computable" };
    return options.di_bands.find((b) => b.max_abs === null || Math.abs(di) <= b.max_abs);
  }
  function doseBadges(img, eiNode, diNode) {
    const b = band(img.deviation_index);
    eiNode.dataset.band = b.name;
    diNode.dataset.band = b.name;
    eiNode.textContent = img.exposure_index === null ? "EI —" : `EI ${Math.round(img.exposure_index)}`;
    diNode.textContent = img.deviation_index === null ? "DI —"
      : `DI ${img.deviation_index > 0 ? "+" : ""}${img.deviation_index.toFixed(1)}`;
    eiNode.title = `Exposure index (target ${img.target_ei}): ${b.meaning}`;
    diNode.title = `Deviation index: ${b.meaning}`;
  }

  // --- worklist ----------------------------------------------------------------------------
  let searchTimer = 0;
  async function loadWorklist() {
    const q = $("search").value.trim();
    let view;
    try {
      view = await api("/api/worklist" + (q ? "?q=" + encodeURIComponent(q) : ""));
    } catch (exc) {
      $("worklist-source").textContent = "Worklist unavailable: " + exc.message;
      return;
    }
    const src = $("worklist-source");
    src.dataset.source = view.source;
    const when = view.as_of ? new Date(view.as_of).toLocaleTimeString() : "never";
    src.textContent = view.source === "ris" ? `From the RIS at ${when}`
      : `RIS not reachable — saved list from ${when} (${dx.age(view.as_of)})`;
    src.title = view.error || "";
    const list = $("worklist");
    const current = orders(exam?.exam?.item);
    list.replaceChildren(...view.items.map((item) => {
      const selected = current.some((o) => sameOrder(o, item));
      const box = el("input", { type: "checkbox", class: "pick", "data-accession": item.accession_number,
        "aria-label": `Select accession ${item.accession_number} to open together with other orders of this patient`,
        onchange: (e) => togglePick(item, e.target.checked) });
      box.item = item;
      return el("div", { class: "worklist-row" },
        el("label", { class: "pick", title: "Select to open with other orders of this patient as one exam" }, box),
        el("button", {
          type: "button", class: "worklist-item" + (selected ? " selected" : ""),
          "data-accession": item.accession_number, onclick: () => openExam(item),
        },
        el("div", { class: "name" }, dx.personName(item.patient_name)),
        el("div", { class: "muted" }, `ID ${item.patient_id} · ${item.patient_sex || "?"} · born ${item.patient_birth_date || "?"}`),
        el("div", {}, `${item.sps_description || item.requested_procedure_description || "procedure"}`),
        el("div", { class: "muted" }, `Acc ${item.accession_number}` + (item.sps_start ? ` · ${new Date(item.sps_start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}` : ""))));
    }));
    if (!view.items.length) list.append(el("p", { class: "muted" }, q ? "No entry matches." : "No entries for today."));
    updatePicks();
  }
  $("search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(loadWorklist, 250); });
  $("refresh").addEventListener("click", async () => {
    $("refresh").disabled = true;
    try {
      const res = await api("/api/worklist/refresh", { method: "POST" });
      if (res.source !== "ris") toast("The RIS does not answer: showing the saved list.");
    } catch (exc) {
      toast("The RIS does not answer: " + exc.message);
    } finally {
      $("refresh").disabled = false;
      await loadWorklist();
    }
  });

  // One exam, opened from a worklist entry, a group of them, or a closed exam's study.
  async function postExam(body, failure) {
    if (exam?.open) {
      toast("An exam is open: close or discontinue it first.");
      return false;
    }
    let ok = true;
    try {
      await api("/api/exam", { method: "POST", body });
      picked = [];
    } catch (exc) {
      toast(failure + exc.message);
      ok = false;
    }
    await loadExam();
    await loadWorklist();
    return ok;
  }

  function pickOf(item) { return { accession_number: item.accession_number, sps_id: item.sps_id || null }; }

  async function openExam(item) {
    await postExam(pickOf(item), "Cannot open the exam: ");
  }

  // --- the group case (IHE SWF): several orders of one patient, one exam ---------------------
  const MAX_GROUP = 20; // as the API allows
  function orders(item) { return item ? [item, ...(item.grouped || [])] : []; }
  function sameOrder(a, b) { return a.accession_number === b.accession_number && (a.sps_id || "") === (b.sps_id || ""); }
  function samePatient(a, b) {
    return a.patient_id === b.patient_id && (a.issuer_of_patient_id || "") === (b.issuer_of_patient_id || "");
  }
  function isPicked(item) { return picked.some((p) => sameOrder(p, item)); }

  function togglePick(item, on) {
    picked = picked.filter((p) => !sameOrder(p, item));
    if (on && (!picked.length || samePatient(picked[0], item)) && picked.length < MAX_GROUP) picked.push(item);
    updatePicks();
  }

  // Tickable: any entry while none is ticked; then only the first ticked patient's entries.
  function updatePicks() {
    for (const box of document.querySelectorAll("#worklist input.pick")) {
      const on = isPicked(box.item);
      box.checked = on;
      box.disabled = !on && picked.length > 0 && (!samePatient(picked[0], box.item) || picked.length >= MAX_GROUP);
      box.closest(".worklist-row").classList.toggle("picked", on);
    }
    $("group-bar").classList.toggle("hidden", !picked.length);
    $("open-together").disabled = picked.length < 2;
    $("open-together").textContent = picked.length > 1 ? `Open ${picked.length} together` : "Open together";
    $("group-state").textContent = picked.length < 2 ? "Tick another order of this patient"
      : `${dx.personName(picked[0].patient_name)}: ${picked.map((p) => p.accession_number).join(", ")}`;
  }

  $("open-together").addEventListener("click", async () => {
    if (picked.length < 2) return;
    await postExam({ group: picked.map(pickOf) }, "Cannot open these orders together: ");
  });
  $("clear-picks").addEventListener("click", () => { picked = []; updatePicks(); });

  // --- the append case (IHE SWF): reopen an exam closed lately to add views -------------------
  async function loadClosed() {
    const list = $("closed-exams");
    try {
      closed = await api("/api/exam/closed");
    } catch (exc) {
      list.replaceChildren(el("p", { class: "muted" }, "Closed exams unavailable: " + exc.message));
      return;
    }
    $("closed-count").textContent = closed.length ? `(${closed.length})` : "";
    list.replaceChildren(...closed.map((c) => {
      const it = c.item;
      return el("div", { class: "closed-row", "data-study-uid": c.study_uid },
        el("div", { class: "name" }, it ? dx.personName(it.patient_name) || "Unnamed patient" : "Exam without patient"),
        it ? el("div", { class: "muted" }, `ID ${it.patient_id || "?"} · born ${it.patient_birth_date || "?"}`) : null,
        ...orders(it).map((o) => el("div", { class: "muted" }, o.accession_number
          ? `Acc ${o.accession_number} · ${o.sps_description || o.requested_procedure_description || "procedure"}`
          : "unscheduled")),
        el("div", { class: "row" },
          el("span", { class: "muted" }, c.series_number === 1 ? "1 series" : `${c.series_number} series`),
          el("button", { type: "button", class: "reopen-button", "data-study-uid": c.study_uid,
            title: "Open this exam again: same study, a new series", onclick: () => reopen(c) }, "Reopen")));
    }));
    if (!closed.length) list.append(el("p", { class: "muted" }, "No exam closed lately."));
  }

  async function reopen(c) {
    if (await postExam({ reopen_study_uid: c.study_uid }, "Cannot reopen the exam: ")) $("reopen").open = false;
  }
  $("reopen").addEventListener("toggle", () => { if ($("reopen").open) loadClosed(); });

  $("unscheduled-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (exam?.open) { toast("An exam is open: close or discontinue it first."); return; }
    const name = [$("u-last").value.trim(), $("u-first").value.trim()].filter(Boolean).join("^");
    try {
      await api("/api/exam", { method: "POST", body: { unscheduled: {
        patient_name: name, patient_id: $("u-id").value.trim(), sex: $("u-sex").value,
        birth_date: $("u-birth").value || null } } });
      $("unscheduled").open = false;
      $("unscheduled-form").reset();
    } catch (exc) {
      toast("Cannot open the exam: " + exc.message);
    }
    await loadExam();
  });

  // --- exam --------------------------------------------------------------------------------
  // The open exam's patient and every order it acquires (several in the group case); a reopened
  // exam (its study closed here before) says, in every console (the server knows, and tells each
  // one by an "exam" event), that its images go into a new series of that study.
  function renderBanner() {
    const banner = $("banner");
    if (!exam?.open) {
      banner.replaceChildren(el("span", { class: "muted" }, "No exam open: pick a worklist entry."));
      return;
    }
    const it = exam.exam.item;
    banner.replaceChildren(...(it ? [
      el("span", { class: "name", id: "patient-name" }, dx.personName(it.patient_name)),
      el("span", {}, `ID ${it.patient_id}`),
      el("span", {}, `born ${it.patient_birth_date || "?"}`), el("span", {}, it.patient_sex || ""),
      el("span", { class: "orders", id: "exam-orders" }, ...orders(it).map((o) => el("span", {
        class: "order muted", "data-accession": o.accession_number },
      o.accession_number ? `Acc ${o.accession_number}` : "unscheduled",
      (o.sps_description || o.requested_procedure_description) ? ` · ${o.sps_description || o.requested_procedure_description}` : ""))),
    ] : [el("span", { class: "name" }, "Exam without patient")]),
    exam.exam.reopened ? el("span", { class: "reopened", id: "reopened" }, `Reopened: adds series ${exam.exam.series_number}`)
      : null);
  }

  async function loadExam() {
    const wasOpen = Boolean(exam?.open);
    exam = await api("/api/exam");
    renderBanner();
    if (wasOpen && !exam.open) loadClosed();
    if (!exam.open) {
      viewer.clear();
      shownUid = "";
      setBadges(null);
    } else {
      const serverView = JSON.stringify(exam.view);
      if (exam.view && serverView !== appliedView) setFields(exam.view); // never overwrite edits in progress
      appliedView = serverView;
    }
    setArmed(exam.armed);
    renderImages();
    const last = exam.images[exam.images.length - 1];
    if (last && last.sop_instance_uid !== newest) { // a new exposure: show it at once
      newest = last.sop_instance_uid;
      await showImage(last);
    } else if (shown()) {
      setBadges(shown());
    }
    for (const id of ["set-view", "arm", "close-exam", "discontinue"]) $(id).disabled = !exam.open;
    updateReviewButtons();
    pollForwarding();
  }

  function setArmed(armed) {
    $("armed-state").textContent = armed ? "released" : "locked";
    $("armed-pill").dataset.tone = armed ? "active" : "";
    $("arm").firstChild.textContent = armed ? "Stop" : "Ready";
    $("arm").dataset.armed = armed ? "1" : "0";
  }

  function setBadges(img) {
    if (!img) {
      for (const id of ["ei-badge", "di-badge"]) $(id).dataset.band = "unknown";
      $("ei-badge").textContent = "EI —"; $("di-badge").textContent = "DI —";
      $("marker").textContent = "";
      return;
    }
    doseBadges(img, $("ei-badge"), $("di-badge"));
    $("marker").textContent = ["R", "L"].includes(img.laterality) ? img.laterality : "";
  }

  async function showImage(img) {
    shownUid = img.sop_instance_uid;
    setBadges(img);
    try {
      await viewer.show(`/api/exam/images/${encodeURIComponent(img.sop_instance_uid)}/preview.png`);
      try {  // the collimation overlay: before data-uid, so a shown image has its field drawn
        viewer.setField(await api(`/api/console/images/${encodeURIComponent(img.sop_instance_uid)}/collimation`));
      } catch (exc) {
        viewer.setField(null);
      }
      viewer.canvas.dataset.uid = img.sop_instance_uid;
    } catch (exc) {
      viewer.clear();
      toast(exc.message);
    }
    renderImages();
    updateReviewButtons();
  }

  function shown() { return exam?.images.find((i) => i.sop_instance_uid === shownUid); }

  function updateReviewButtons() {
    const img = shown();
    for (const id of ["accept", "reject", "repeat"]) $(id).disabled = !img;
    $("review-state").textContent = img ? (img.status === "new" ? "Not reviewed yet"
      : img.status === "accepted" ? "Accepted" : `Rejected: ${img.reason}`) : "";
  }

  function renderImages() {
    const list = $("images");
    if (!exam?.images.length) {
      list.replaceChildren(el("p", { class: "muted" }, "No image yet."));
      return;
    }
    list.replaceChildren(...exam.images.map((img, i) => {
      const ei = el("span", { class: "badge" }), di = el("span", { class: "badge" });
      doseBadges(img, ei, di);
      const fwd = el("div", { class: "fwd" }, ...(forwarding[img.sop_instance_uid] || []).map((d) =>
        el("span", { "data-state": d.held ? "held" : d.state, "data-destination": d.destination,
          title: d.held ? `leaves once you accept it (or at ${new Date(d.held_until * 1000).toLocaleTimeString()})`
            : d.last_error || `${d.attempts} attempt(s)` },
        `${d.destination}: ${d.held ? "held for review" : d.state}`)));
      return el("div", {
        class: "image-row" + (img.sop_instance_uid === shownUid ? " shown" : ""), "data-uid": img.sop_instance_uid,
        onclick: () => showImage(img),
      },
      el("div", { class: "row" }, el("b", {}, `#${i + 1}`), `${img.body_part} ${img.view_position} ${img.laterality || ""}`,
        el("span", { class: "status", "data-status": img.status }, img.status === "new" ? "to review" : img.status)),
      el("div", { class: "row" }, ei, di), fwd);
    }));
  }

  async function pollForwarding() {
    clearTimeout(forwardTimer);
    if (!exam?.open || !exam.images.length) return;
    try {
      forwarding = await api("/api/console/forwarding");
    } catch (exc) {
      return;
    }
    renderImages();
    const rows = exam.images.map((i) => forwarding[i.sop_instance_uid] || []);
    if (rows.some((r) => !r.length || r.some((d) => (d.state === "pending" && !d.held) || d.state === "sending"))) {
      slowPolls = 0;
      forwardTimer = setTimeout(pollForwarding, 1500);
    } else if (rows.some((r) => r.some((d) => d.held))) {
      forwardTimer = setTimeout(pollForwarding, 5000); // waiting for a verdict (which polls at once)
    } else if (rows.some((r) => r.some((d) => d.state === "sent")) && slowPolls++ < 24) {
      forwardTimer = setTimeout(pollForwarding, 5000); // a storage commitment may still come
    }
  }

  // --- view and the hand switch -------------------------------------------------------------
  function sameView(a, b) {
    return a && b && a.body_part === b.body_part && a.view_position === b.view_position
      && (a.laterality || null) === (b.laterality || null) && Number(a.kvp) === Number(b.kvp)
      && Number(a.mas) === Number(b.mas) && Number(a.target_ei) === Number(b.target_ei);
  }

  async function setView() {
    try {
      await api("/api/exam/view", { method: "POST", body: chosenView() });
      return true;
    } catch (exc) {
      toast("View refused: " + exc.message);
      return false;
    } finally {
      await loadExam();
    }
  }

  async function arm(on) {
    if (!exam?.open) return;
    if (on && !sameView(exam.view, chosenView()) && !(await setView())) return;
    try {
      await api("/api/exam/arm", { method: "POST", body: { armed: on } });
    } catch (exc) {
      toast("Cannot make ready: " + exc.message);
    }
    await loadExam();
  }

  $("set-view").addEventListener("click", setView);
  $("arm").addEventListener("click", () => arm($("arm").dataset.armed !== "1"));

  // --- review ------------------------------------------------------------------------------
  async function review(status) {
    const img = shown();
    if (!img) return false;
    let reason = "";
    if (status === "rejected") {
      const code = $("reject-reason").value;
      const note = $("reject-note").value.trim();
      if (!code) { toast("Choose a reject reason first."); $("reject-reason").focus(); return false; }
      if (code === "other" && !note) { toast("Say why in the note."); $("reject-note").focus(); return false; }
      const label = options.reject_reasons.find((r) => r.code === code).label;
      reason = note ? `${label}: ${note}` : label;
    }
    try {
      await api(`/api/exam/images/${encodeURIComponent(img.sop_instance_uid)}/review`, { method: "POST", body: { status, reason } });
      $("reject-reason").value = ""; $("reject-note").value = "";
    } catch (exc) {
      toast("Review refused: " + exc.message);
      return false;
    }
    await loadExam();
    return true;
  }
  $("accept").addEventListener("click", () => review("accepted"));
  $("reject").addEventListener("click", () => review("rejected"));
  $("repeat").addEventListener("click", async () => { if (await review("rejected")) await arm(true); });

  async function closeExam(completed) {
    const reason = $("discontinue-reason").value.trim();
    if (!completed && !reason) { toast("Say why the exam is discontinued."); $("discontinue-reason").focus(); return; }
    const unreviewed = exam.images.filter((i) => i.status === "new").length;
    if (completed && unreviewed) toast(`${unreviewed} image(s) were not reviewed.`, "info");
    try {
      await api("/api/exam/close", { method: "POST", body: { completed, reason } });
      $("discontinue-reason").value = "";
    } catch (exc) {
      toast("Cannot close the exam: " + exc.message);
    }
    await loadExam();
    await loadWorklist();
  }
  $("close-exam").addEventListener("click", () => closeExam(true));
  $("discontinue").addEventListener("click", () => closeExam(false));

  // --- room state, live ----------------------------------------------------------------------
  const GENERATOR = { idle: "idle", preparing: "prepare", ready: "ready", exposing: "exposing",
    readout: "readout", done: "done", failed: "failed" };
  function setGenerator(state) {
    $("generator-state").textContent = GENERATOR[state] || state;
    $("generator-pill").dataset.tone = ["preparing", "ready", "exposing", "readout"].includes(state) ? "active"
      : state === "failed" ? "bad" : "ok";
  }

  async function loadRoom() {
    const room = await api("/api/console/room");
    const t = room.detector.temperature_c;
    $("detector-state").textContent = room.detector.mode;
    $("detector-temp").textContent = t === null ? "" : `${t.toFixed(1)} °C`;
    $("detector-pill").dataset.tone = room.alarms.some((a) => a.code.startsWith("detector")) ? "bad" : "ok";
    $("calibration-state").textContent = room.calibration.valid
      ? `valid (${(room.calibration.age_s / 3600).toFixed(1)} h)` : "not valid";
    $("calibration-pill").dataset.tone = room.calibration.valid ? "ok" : "bad";
    $("calibration-pill").title = room.calibration.problem || "Calibration";
    setGenerator(room.exposure_state);
    setArmed(room.armed);
    $("alarm-pill").classList.toggle("hidden", !room.alarms.length);
    $("alarm-count").textContent = `${room.alarms.length} alarm(s)`;
    $("alarm-pill").title = room.alarms.map((a) => a.message).join("\n");
  }

  function connect() {
    const es = new EventSource("/api/events");
    es.addEventListener("exposure", (e) => {
      const state = JSON.parse(e.data).state;
      setGenerator(state);
      if (state === "done" || state === "failed") loadRoom();
    });
    es.addEventListener("exam", (e) => {
      const d = JSON.parse(e.data);
      if (["refused", "failed", "frame-kept"].includes(d.state)) toast(d.reason || d.state);
      if (d.state === "armed" || d.state === "disarmed") setArmed(d.state === "armed");
      loadExam();
    });
    es.addEventListener("image", () => loadExam());
    es.addEventListener("alarm", () => loadRoom());
    es.addEventListener("calibration", () => loadRoom());
    es.onerror = async () => {
      if (es.readyState !== EventSource.CLOSED) return; // the browser reconnects by itself
      try {
        await api("/api/me"); // 401 -> log-in page
        setTimeout(connect, 2000);
      } catch (exc) { /* leaving for the log-in page */ }
    };
  }

  // --- keyboard: the expose side without the mouse -------------------------------------------
  addEventListener("keydown", (e) => {
    const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName) && e.target.type !== "checkbox";
    if (e.key === "Escape" && typing) { e.target.blur(); return; }
    if (typing || e.ctrlKey || e.altKey || e.metaKey) return;
    const action = {
      r: () => arm($("arm").dataset.armed !== "1"), v: setView, a: () => review("accepted"),
      x: () => review("rejected"), p: () => $("repeat").click(), "+": () => viewer.zoomBy(1.25),
      "=": () => viewer.zoomBy(1.25), "-": () => viewer.zoomBy(0.8), "0": () => viewer.reset(),
      "/": () => $("search").focus(),
    }[e.key.toLowerCase()];
    if (action) { e.preventDefault(); action(); }
  });

  await Promise.all([loadWorklist(), loadExam(), loadRoom(), loadClosed()]);
  connect();
  setInterval(() => loadRoom().catch(() => {}), 20000); // temperature and calibration age drift slowly
  document.body.dataset.ready = "1";
})();
