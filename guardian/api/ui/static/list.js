// The rollouts list: polls /ui/data/rollouts (with the page's filters) every 2 s.
"use strict";
(function () {
  const params = new URLSearchParams(location.search);
  const query = new URLSearchParams();
  if (params.get("service")) query.set("service", params.get("service"));
  if (params.get("phase")) query.set("phase", params.get("phase"));
  if (params.get("strategy")) query.set("strategy", params.get("strategy"));
  const body = document.querySelector("#rollouts tbody");
  const count = document.getElementById("count");
  function row(r) {
    const verdicts = RG.el("span", {class: "verdicts"});
    for (const v of r.verdicts) verdicts.append(RG.el("span", {class: "verdict " + (v.result || ""), title: v.check + ": " + v.result, text: v.check}));
    const phase = r.phase + (r.paused_by ? " (" + r.paused_by + ")" : "") + (r.awaiting_approval ? " · waiting for approval" : "");
    return RG.el("tr", {"data-id": r.id, class: "phase-" + r.phase},
      RG.el("td", {text: r.service}), RG.el("td", {text: r.version, title: r.image}), RG.el("td", {text: r.strategy}),
      RG.el("td", {class: "phase", text: phase}), RG.el("td", {text: r.step}), RG.el("td", {class: "weight", text: r.weight + "%"}),
      RG.el("td", {text: RG.duration(r.time_in_step)}), RG.el("td", {}, verdicts),
      RG.el("td", {}, RG.el("a", {href: "/ui/rollouts/" + encodeURIComponent(r.id), text: r.id})));
  }
  RG.every(2000, async () => {
    const data = await RG.getJSON("/ui/data/rollouts?" + query.toString());
    body.replaceChildren(...data.rollouts.map(row));
    count.textContent = data.total > data.rollouts.length ? `${data.rollouts.length} of ${data.total} shown` : `${data.total} rollout(s)`;
  });
})();
