// xds-server status page: re-fetch this same URL every 2 s and swap each live section's
// content in place (no reload, scroll and the chosen resource kept). The server renders
// and escapes everything; this script only moves server-made HTML between documents.
"use strict";
(function () {
  const PERIOD_MS = 2000;
  const note = document.getElementById("refresh");

  async function refresh() {
    try {
      const response = await fetch(window.location.href, {
        headers: { Accept: "text/html" },
        cache: "no-store",
        credentials: "same-origin",
      });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const el of document.querySelectorAll("[data-live]")) {
        const next = fresh.getElementById(el.id);
        // Unchanged sections are left alone, so a text selection in them survives.
        if (next && next.innerHTML !== el.innerHTML) el.innerHTML = next.innerHTML;
      }
      note.textContent = "live: refreshed every 2 s";
      note.className = "";
    } catch (err) {
      note.textContent = "refresh failed (" + err.message + "), retrying";
      note.className = "error";
    }
    window.setTimeout(refresh, PERIOD_MS);
  }

  window.setTimeout(refresh, PERIOD_MS);
  note.textContent = "live: refreshed every 2 s";
})();
