// A rollout's page: polls /ui/data/rollouts/ID every 2 s; plots canary against baseline (uPlot, vendored).
"use strict";
(function () {
  const id = document.body.dataset.rollout;
  const plots = {};
  let ticksSeen = -1;
  const $ = (x) => document.getElementById(x);

  function summary(r) {
    const parts = [["phase", r.phase + (r.paused_by ? " by " + r.paused_by : "")], ["step", r.step], ["weight", r.weight + "%"],
      ["strategy", r.strategy], ["in step", RG.duration(r.time_in_step)], ["target", r.target], ["rules", r.rules]];
    if (r.awaiting_approval) parts.unshift(["", "waiting for approval"]);
    $("summary").replaceChildren(...parts.map(([k, v]) => RG.el("span", {class: "fact" + (k === "" ? " attention" : "")}, k ? RG.el("b", {text: k + " "}) : null, v)));
    $("summary").append(RG.el("p", {class: "reason", text: r.reason}));
  }
  function timeline(r) {
    $("timeline").replaceChildren(...r.steps_detail.flatMap((s) => {
      const items = [RG.el("li", {class: "step " + s.state, text: s.weight + "%"})];
      if (s.approve) items.push(RG.el("li", {class: "gate " + (s.approved ? "done" : s.state === "current" && r.awaiting_approval ? "current" : "todo"), text: s.approved ? "approved" : "approve"}));
      return items;
    }));
  }
  function actions(r) {
    for (const b of document.querySelectorAll("#actions button")) b.hidden = !(r.actions.includes(b.dataset.action) && RG.role === "operator");
  }
  function checks(data) {
    const body = document.querySelector("#checks tbody");
    const rows = [];
    for (const [name, c] of Object.entries(data.checks)) {
      const last = c.result.length - 1;
      const strip = RG.el("span", {class: "strip"});
      const from = Math.max(0, c.result.length - 120);
      for (let i = from; i <= last; i++) {
        strip.append(RG.el("span", {class: "cell " + (c.result[i] || "none"),
          title: `tick ${i} · ${c.result[i] || "no verdict"} · value ${RG.num(c.value[i])} · threshold ${RG.num(c.threshold[i])} · n ${RG.num(c.sample_size[i])} · ${c.statistic[i] || ""}`}));
      }
      rows.push(RG.el("tr", {"data-check": name}, RG.el("td", {text: name}), RG.el("td", {}, RG.el("span", {class: "verdict " + (c.result[last] || ""), text: c.result[last] || "—", title: c.reason[last] || ""})),
        RG.el("td", {text: RG.num(c.value[last])}), RG.el("td", {text: RG.num(c.threshold[last])}), RG.el("td", {text: RG.num(c.sample_size[last])}),
        RG.el("td", {class: "stat", text: c.statistic[last] || ""}), RG.el("td", {}, strip)));
    }
    body.replaceChildren(...rows);
  }
  function plot(key, title, xs, columns, labels, colours, scales) {
    const data = [xs, ...columns];
    if (plots[key]) { plots[key].setData(data); return; }
    const box = RG.el("div", {class: "plot", "data-plot": key}, RG.el("h3", {text: title}));
    $("plots").append(box);
    const width = Math.max(320, Math.min(640, box.clientWidth || 600));
    const axes = [{}, {size: 60}];
    if (scales && scales.includes("n")) axes.push({scale: "n", side: 1, size: 60, grid: {show: false}});
    plots[key] = new uPlot({width, height: 200, series: [{}, ...labels.map((l, i) => ({label: l, stroke: colours[i], width: 2, spanGaps: false,
      scale: (scales && scales[i]) || "y", value: (u, v) => RG.num(v)}))], axes}, data, box);
  }
  function series(data) {
    const xs = data.times;
    for (const [signal, arms] of Object.entries(data.series)) plot("s:" + signal, signal + ": canary vs baseline", xs, [arms.canary, arms.baseline], ["canary", "baseline"], ["#d62728", "#1f77b4"]);
    for (const [name, c] of Object.entries(data.checks)) {
      if (!c.value.some((v) => v !== null)) continue;
      plot("c:" + name, name + ": value, threshold and sample size", xs, [c.value, c.threshold, c.sample_size], ["value", "threshold", "sample size"], ["#9467bd", "#7f7f7f", "#bcbd22"], ["y", "y", "n"]);
    }
  }
  function decisions(data) {
    $("decisions").replaceChildren(...data.decisions.slice().reverse().map((d) => {
      const who = d.by ? d.by : d.source;
      const li = RG.el("li", {class: "decision " + d.action}, RG.el("span", {class: "when", text: RG.time(d.at) + (d.tick !== null && d.tick !== undefined ? " · tick " + d.tick : "")}),
        RG.el("b", {class: "action", text: d.action}), RG.el("span", {class: "by", text: " by " + who}), RG.el("div", {class: "reason", text: d.reason}));
      if (d.verdicts.length) li.append(RG.el("ul", {class: "evidence"}, ...d.verdicts.map((v) => RG.el("li", {text: `${v.check} ${v.result}: value ${RG.num(v.value)} vs threshold ${RG.num(v.threshold)}, n ${RG.num(v.sample_size)}, ${v.statistic || ""}: ${v.reason}`}))));
      if (d.logs.length) li.append(RG.el("ul", {class: "logs"}, ...d.logs.map((t) => RG.el("li", {}, RG.el("code", {text: t.template}), ` ${t.canary_count}× in canary, ${t.baseline_count}× in baseline`))));
      if (d.outcome && d.outcome.ok === false) li.append(RG.el("div", {class: "error", text: "action failed: " + d.outcome.detail}));
      return li;
    }));
  }
  function alerts(data) {
    $("alerts").replaceChildren(...(data.alerts.length ? data.alerts.map((a) => RG.el("li", {}, RG.el("b", {text: a.name + " "}), `${a.status}, asks ${a.action}: `,
      RG.el("span", {text: Object.entries(a.annotations).map(([k, v]) => k + ": " + v).join("; ")}))) : [RG.el("li", {class: "muted", text: "none firing"})]));
  }
  for (const b of document.querySelectorAll("#actions button")) {
    b.addEventListener("click", async () => {
      if (!confirm(`${b.dataset.action} rollout ${id}?`)) return;
      const r = await RG.act(id, b.dataset.action);
      $("action-result").textContent = !r.ok ? `${b.dataset.action} refused: ${r.body.error || r.status}`
        : r.status === 202 ? `${b.dataset.action}: sent to the replica holding the rollout (intent ${r.body.intent.id})`
        : `${b.dataset.action}: done`;
      $("action-result").className = r.ok ? "ok" : "error";
      refresh();
    });
  }
  async function refresh() {
    const data = await RG.getJSON("/ui/data/rollouts/" + encodeURIComponent(id));
    summary(data.rollout); timeline(data.rollout); actions(data.rollout); checks(data); decisions(data); alerts(data);
    if (data.times.length !== ticksSeen) { ticksSeen = data.times.length; series(data); }
  }
  RG.every(2000, refresh);
})();
