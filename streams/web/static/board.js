// The alert list refreshes itself from /board/alerts.json (filters apply without reload).
(function () {
  "use strict";
  var form = document.getElementById("filters");
  var body = document.getElementById("alert-rows");
  if (!form || !body) { return; }
  var count = document.getElementById("alert-count");
  var live = document.getElementById("live");

  function text(tag, value, cls) {
    var el = document.createElement(tag);
    el.textContent = value == null ? "" : String(value);
    if (cls) { el.className = cls; }
    return el;
  }

  function row(a) {
    var tr = document.createElement("tr");
    tr.dataset.alert = a.alert_id;
    tr.className = a.severity;
    tr.appendChild(text("td", String(a.fiscal_year)));
    tr.appendChild(text("td", a.since));
    tr.appendChild(text("td", a.rule_name));
    var sev = document.createElement("td");
    sev.appendChild(text("span", a.severity_name, "sev " + a.severity));
    tr.appendChild(sev);
    var subject = document.createElement("td");
    var link = text("a", a.subject_name + "（" + a.subject_id + "）");
    link.href = "/alerts/" + encodeURIComponent(a.alert_id).replace(/%3A/g, ":");
    subject.appendChild(link);
    tr.appendChild(subject);
    tr.appendChild(text("td", a.department_name));
    tr.appendChild(text("td", a.execution_rate));
    tr.appendChild(text("td", a.status_name));
    var disp = document.createElement("td");
    disp.appendChild(text("span", a.disposition.status_name, "disp " + (a.disposition.status || "")));
    tr.appendChild(disp);
    tr.appendChild(text("td", a.disposition.deadline || "—"));
    return tr;
  }

  function query() {
    var params = new URLSearchParams(new FormData(form));
    return params.toString();
  }

  var busy = false;
  function refresh() {
    if (busy) { return; }
    busy = true;
    var q = query();
    fetch("/board/alerts.json?" + q, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (data) {
        var rows = document.createDocumentFragment();
        data.alerts.forEach(function (a) { rows.appendChild(row(a)); });
        body.replaceChildren(rows);
        if (count) {
          var more = data.count > data.alerts.length;
          count.textContent = "（" + data.count + "条" +
            (more ? "，显示最紧要的" + data.alerts.length + "条，可用筛选缩小范围" : "") + "）";
        }
        if (live) { live.className = "live"; live.textContent = "● 实时更新 " + data.clock; }
        if (history.replaceState) { history.replaceState(null, "", "/?" + q); }
      })
      .catch(function (err) {
        if (!live) { return; }
        live.className = "live stale";
        // A session that expired answers 401 (or the login redirect): retrying cannot mend it.
        live.textContent = String(err && err.message) === "401" ? "○ 登录已过期，请刷新页面重新登录" : "○ 连接中断，重试中";
      })
      .then(function () { busy = false; });
  }

  form.addEventListener("change", function (event) {
    // The year also sets the figures above the list (gauge, ranking): a page of its own.
    if (event.target && event.target.name === "year") { form.submit(); return; }
    refresh();
  });
  setInterval(refresh, 3000);
})();
