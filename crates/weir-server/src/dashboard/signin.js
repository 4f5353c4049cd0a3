"use strict";
// Trades a token for a session cookie (HttpOnly: the page never sees it), then opens the dashboard.
document.getElementById("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = document.getElementById("sign-in-error");
  const response = await fetch("/api/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: document.getElementById("token").value }),
  });
  if (response.ok) location.href = "/";
  else out.textContent = (await response.json()).error;
});
