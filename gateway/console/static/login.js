// The log-in page: asks for nothing but a user and a password, shows no patient data.
"use strict";

(() => {
  const reasons = {
    expired: "Your session has ended. Log in again.",
    idle: "You were logged out after a period without use.",
  };
  const reason = new URLSearchParams(location.search).get("reason");
  dx.$("login-reason").textContent = reasons[reason] || "";

  dx.$("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = dx.$("login-error");
    error.textContent = "";
    dx.$("login-button").disabled = true;
    try {
      const r = await fetch("/api/login", {
        method: "POST", credentials: "same-origin", cache: "no-store",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ user: dx.$("user").value, password: dx.$("password").value }),
      });
      if (r.ok) {
        location.replace("/console/tech.html");
        return;
      }
      error.textContent = r.status === 423 ? "This user is locked after too many wrong passwords. Try later or ask an administrator."
        : r.status === 401 ? "Wrong user name or password." : `Log-in failed (${r.status}).`;
    } catch (exc) {
      error.textContent = "The gateway does not answer: " + exc.message;
    } finally {
      dx.$("password").value = "";
      dx.$("login-button").disabled = false;
    }
  });
})();
