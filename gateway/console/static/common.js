// dxgate console: the API with its CSRF token, the session (401 or idle -> log-in page), DOM helpers.
// Everything shown is set as text (textContent, text nodes): patient text cannot become markup.
"use strict";

const dx = (() => {
  const ROLES = ["technologist", "engineer", "admin"];
  let csrf = "";

  let leaving = false;
  let loggingOut = null;  // the reason of a log-out under way: the 401s it causes are not "expired"
  function toLogin(reason) {
    if (leaving) return;  // several calls may see the 401 at once: one navigation, not a race of them
    leaving = true;
    const why = loggingOut !== null ? loggingOut : reason;
    location.replace("/console/" + (why ? "?reason=" + encodeURIComponent(why) : ""));
  }

  async function api(path, options = {}) {
    const method = options.method || "GET";
    const init = { method, headers: {}, credentials: "same-origin", cache: "no-store" };
    if (method !== "GET") init.headers["X-CSRF-Token"] = csrf;
    if (options.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    const r = await fetch(path, init);
    if (r.status === 401) {
      toLogin("expired");
      throw new Error("the session has ended");
    }
    const data = (r.headers.get("content-type") || "").includes("json") ? await r.json() : null;
    if (!r.ok) {
      const detail = data && data.detail;
      const err = new Error(typeof detail === "string" ? detail : (detail ? JSON.stringify(detail) : r.statusText));
      err.status = r.status;
      throw err;
    }
    return data;
  }

  // The logged-in user, or off to the log-in page. Starts the idle timer: no touch, key or
  // pointer for the server's idle limit ends the session here too.
  async function session() {
    const r = await fetch("/api/me", { credentials: "same-origin", cache: "no-store" });
    if (r.status !== 200) {
      toLogin("");
      return new Promise(() => {});
    }
    const me = await r.json();
    csrf = me.csrf_token;
    idleTimer(Math.max(30, me.expires_in_s));
    return me;
  }

  function idleTimer(idleS) {
    let last = Date.now();
    const touch = () => { last = Date.now(); };
    for (const kind of ["keydown", "pointerdown", "wheel", "touchstart"]) {
      addEventListener(kind, touch, { passive: true, capture: true });
    }
    setInterval(() => { if (Date.now() - last > idleS * 1000) logout("idle"); }, 1000);
  }

  async function logout(reason) {
    loggingOut = reason || "";
    try {
      await fetch("/api/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf } });
    } finally {
      toLogin(reason || "");
    }
  }

  function allows(role, needed) { return ROLES.indexOf(role) >= ROLES.indexOf(needed); }

  // el("div", {class: "x", "data-a": 1, onclick: f}, "text", child...)
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function $(id) { return document.getElementById(id); }

  let toastTimer = 0;
  function toast(message, kind = "error") {
    let t = $("toast");
    if (!t) { t = el("div", { id: "toast", role: "status" }); document.body.append(t); }
    t.className = "toast" + (kind === "info" ? " info" : "");
    t.textContent = message;
    t.classList.remove("hidden");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => t.classList.add("hidden"), 6000);
  }

  // DICOM person name Last^First^Middle -> "Last, First Middle"
  function personName(pn) {
    if (!pn) return "";
    const [last, first, middle] = String(pn).split("^");
    return [last, [first, middle].filter(Boolean).join(" ")].filter(Boolean).join(", ");
  }

  function age(iso) {
    if (!iso) return "";
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 90) return Math.round(s) + " s old";
    if (s < 5400) return Math.round(s / 60) + " min old";
    return (s / 3600).toFixed(1) + " h old";
  }

  function header(me) {
    $("who").textContent = `${me.user} (${me.role})`;
    $("logout").addEventListener("click", () => logout(""));
    for (const link of document.querySelectorAll("[data-needs]")) {
      if (!allows(me.role, link.dataset.needs)) link.remove();
    }
  }

  return { api, session, logout, allows, el, $, toast, personName, age, header };
})();
