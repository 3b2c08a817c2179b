// scim-bridge admin console: the little JS it needs (no build chain). The page works without
// it; with it, actions ask for confirmation and the tenants table and the running exports
// refresh their figures.
"use strict";

document.addEventListener("submit", function (ev) {
  var form = ev.target;
  var question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    ev.preventDefault();
  }
});

// The tenants table: outbox depth, readiness and sync progress every 5 s, from the same admin
// API the CLI uses (the session cookie authenticates it; a GET needs no CSRF token).
function refreshTenants() {
  var table = document.getElementById("tenants");
  if (!table) {
    return;
  }
  fetch("/admin/api/tenants", { credentials: "same-origin" })
    .then(function (r) {
      if (r.status === 401) {
        // The session ended: stop asking, the next click goes to the sign-in page.
        window.clearInterval(timer);
        return null;
      }
      return r.ok ? r.json() : null;
    })
    .then(function (rows) {
      if (!rows) {
        return;
      }
      rows.forEach(function (t) {
        var row = document.querySelector('tr[data-tenant="' + CSS.escape(t.id) + '"]');
        if (!row) {
          return;
        }
        var set = function (field, text) {
          var cell = row.querySelector('[data-field="' + field + '"]');
          if (cell) {
            cell.textContent = text;
          }
        };
        set("ready", t.ready ? "ready" : "unavailable");
        set("pending", String(t.outbox_pending));
        set("failed", String(t.outbox_failed));
        set("oldest", t.outbox_pending ? Math.round(t.oldest_pending_s) + " s" : "-");
        set("users", String(t.users));
        set("groups", String(t.groups));
        if (t.sync && t.sync.running) {
          var total = t.sync.users_total ? " / " + t.sync.users_total : "";
          set("sync", "running: " + t.sync.users_seen + total + " users");
        }
      });
    })
    .catch(function () { /* the next tick tries again */ });
}

// The running exports (audit export, access report) and their progress, from
// /admin/api/exports; the words are the ones the server renders (ExportView::text).
function exportText(e) {
  var what = e.export === "audit" ? "audit export" : e.export === "access" ? "access report" : e.export;
  var whom = e.tenant ? "tenant " + e.tenant : "all tenants";
  var total = e.total === null || e.total === undefined ? "" : " / " + e.total;
  return what + " (" + whom + ", " + e.format + "): " + e.rows + total + " rows";
}

function refreshExports() {
  var list = document.getElementById("exports");
  if (!list) {
    return;
  }
  fetch("/admin/api/exports", { credentials: "same-origin" })
    .then(function (r) {
      if (r.status === 401) {
        window.clearInterval(timer);
        return null;
      }
      return r.ok ? r.json() : null;
    })
    .then(function (exports) {
      if (!exports) {
        return;
      }
      while (list.firstChild) {
        list.removeChild(list.firstChild);
      }
      if (exports.length === 0) {
        var none = document.createElement("li");
        none.className = "muted";
        none.textContent = "none running";
        list.appendChild(none);
      }
      exports.forEach(function (e) {
        var li = document.createElement("li");
        li.setAttribute("data-export", String(e.id));
        li.textContent = exportText(e);
        list.appendChild(li);
      });
    })
    .catch(function () { /* the next tick tries again */ });
}

var timer = null;
if (document.getElementById("tenants")) {
  timer = window.setInterval(function () {
    refreshTenants();
    refreshExports();
  }, 5000);
}
