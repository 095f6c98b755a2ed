// The cost explorer (d2ldw.widgets.CostExplorer). Concatenated after
// explorers_core.js and explorers_ui.js into one ES module.

const COST_LABELS = {
  in_channels: "in channels C",
  out_channels: "out channels N",
  kernel_size: "kernel k",
  size: "input size",
  stride: "stride",
  groups: "groups G (grouped)",
};
const METRICS = [
  ["multAdds", "mult-adds"],
  ["params", "parameters"],
  ["bytes", "bytes moved (float32)"],
  ["intensity", "FLOP per byte"],
];
const VARIANTS = [
  ["full", "full"],
  ["grouped", "grouped"],
  ["depthwise", "depthwise"],
  ["separable", "separable"],
];

function gcd(a, b) {
  return b === 0 ? a : gcd(b, a % b);
}

// An exact ratio of two integers, reduced, as Python prints a Fraction:
// "57/800", "2".
export function fraction(numerator, denominator) {
  const divisor = gcd(numerator, denominator);
  const [top, bottom] = [numerator / divisor, denominator / divisor];
  return bottom === 1 ? `${top}` : `${top}/${bottom}`;
}

export function formatMetric(metric, value) {
  return metric === "intensity" ? value.toFixed(2) : formatCount(value);
}

function renderCostExplorer(model, el) {
  const root = h("div", { class: "d2ldw-explorer d2ldw-cost-explorer" });
  const controlsBox = h("div", { class: "d2ldw-controls" });
  const update = () => refresh();
  for (const [name, label] of Object.entries(COST_LABELS)) {
    controlsBox.append(
      slider(model, name, label, choices(model, name), update).row,
    );
  }
  const layer = h("div", { class: "d2ldw-summary" });
  const charts = h("div", { class: "d2ldw-charts" });
  const ratio = h("div", { class: "d2ldw-ratio" });
  const error = h("div", { class: "d2ldw-error", role: "alert" });
  root.append(controlsBox, layer, charts, ratio, error);
  el.append(root);

  function refresh() {
    const c = {};
    for (const name of Object.keys(COST_LABELS)) c[name] = model.get(name);
    const variants = layerVariants(c);
    const names = {
      full: `full ${c.kernel_size}×${c.kernel_size}`,
      grouped: `grouped, G=${c.groups}`,
      depthwise: "depthwise C→C",
      separable: "separable",
    };
    layer.textContent =
      `one layer: (${c.in_channels}, ${c.size}, ${c.size}) → ` +
      `${c.out_channels} channels, padding ${Math.floor(c.kernel_size / 2)}, ` +
      `stride ${c.stride}; separable = depthwise C→C, then 1×1 to N`;
    charts.replaceChildren();
    for (const [metric, title] of METRICS) {
      const values = VARIANTS.map(([v]) => variants[v][metric]).filter(
        (x) => x !== null,
      );
      const largest = Math.max(...values);
      const chart = h("div", { class: "d2ldw-chart" }, [
        h("div", { class: "d2ldw-chart-title", text: title }),
      ]);
      for (const [variant] of VARIANTS) {
        const value = variants[variant][metric];
        const fraction = value === null || largest === 0 ? 0 : value / largest;
        const bar = h("div", { class: `d2ldw-bar d2ldw-bar-${variant}` });
        bar.style.width = `${Math.max(0.5, 100 * fraction)}%`;
        if (value === null) bar.style.width = "0";
        chart.append(
          h(
            "div",
            {
              class: "d2ldw-bar-row",
              "data-variant": variant,
              "data-metric": metric,
            },
            [
              h("span", { class: "d2ldw-bar-name", text: names[variant] }),
              h("span", { class: "d2ldw-bar-track" }, [bar]),
              h("span", {
                class: "d2ldw-bar-value",
                text: value === null ? "—" : formatMetric(metric, value),
              }),
            ],
          ),
        );
      }
      charts.append(chart);
    }
    const full = variants.full.multAdds,
      separable = variants.separable.multAdds;
    const n = c.out_channels,
      k2 = c.kernel_size * c.kernel_size;
    ratio.replaceChildren(
      "separable / full mult-adds = ",
      h("b", { class: "d2ldw-counted-ratio", text: fraction(separable, full) }),
      ` ≈ ${(separable / full).toFixed(4)}; ` +
        `1/N + 1/k² = 1/${n} + 1/${k2} = `,
      h("b", { class: "d2ldw-formula-ratio", text: fraction(k2 + n, n * k2) }),
    );
    const message = variants.grouped.error;
    error.replaceChildren(
      ...(message
        ? [
            "grouped: ValueError: ",
            h("span", { class: "d2ldw-error-message", text: message }),
          ]
        : []),
    );
    error.style.display = message ? "" : "none";
    root.dataset.state = message ? "error" : "ok";
  }
  refresh();
}
