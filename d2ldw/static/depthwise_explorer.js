// The depthwise weight explorer (d2ldw.widgets.DepthwiseWeightExplorer).
// Concatenated after explorers_core.js and explorers_ui.js into one ES module.

const DEPTHWISE_LABELS = {
  in_channels: "in channels C",
  multiplier: "multiplier M",
  kernel_size: "kernel k",
};

function drawFilter(k, colour, shade) {
  const cell = Math.max(5, Math.floor(30 / k));
  const picture = svg("svg", {
    width: k * cell,
    height: k * cell,
    viewBox: `0 0 ${k * cell} ${k * cell}`,
  });
  for (let a = 0; a < k; a++) {
    for (let b = 0; b < k; b++) {
      picture.append(
        svg("rect", {
          x: b * cell,
          y: a * cell,
          width: cell,
          height: cell,
          fill: colour,
          "fill-opacity": shade,
          stroke: "#ffffff",
          class: "d2ldw-tap-cell",
        }),
      );
    }
  }
  return picture;
}

function renderDepthwiseExplorer(model, el) {
  const root = h("div", { class: "d2ldw-explorer d2ldw-depthwise-explorer" });
  const controlsBox = h("div", { class: "d2ldw-controls" });
  const update = () => refresh();
  for (const [name, label] of Object.entries(DEPTHWISE_LABELS)) {
    controlsBox.append(
      slider(model, name, label, choices(model, name), update).row,
    );
  }
  const views = h("div", { class: "d2ldw-modes" });
  const group = radioGroup("view");
  let reshaped = false;
  for (const [value, text] of [
    [false, "as stored"],
    [true, "as w.reshape(C, M, k, k)"],
  ]) {
    const radio = h("input", {
      type: "radio",
      name: group,
      "data-control": value ? "reshaped" : "stored",
    });
    radio.checked = value === reshaped;
    radio.addEventListener("change", () => {
      reshaped = value;
      refresh();
    });
    views.append(h("label", {}, [radio, " " + text]));
  }
  const title = h("div", { class: "d2ldw-summary" });
  const filters = h("div", { class: "d2ldw-filters" });
  const detail = h("div", { class: "d2ldw-detail" });
  const memory = h("div", { class: "d2ldw-memory" });
  root.append(controlsBox, views, title, filters, detail, memory);
  el.append(root);
  let chosen = 0;

  function refresh() {
    const [C, M, k] = [
      model.get("in_channels"),
      model.get("multiplier"),
      model.get("kernel_size"),
    ];
    const rows = depthwiseFilters(C, M);
    if (chosen >= rows.length) chosen = 0;
    title.replaceChildren(
      "weight ",
      h("code", {
        class: "d2ldw-weight-shape",
        text: formatTuple([C * M, 1, k, k]),
      }),
      ` for nn.Conv2d(${C}, ${C * M}, ${k}, groups=${C}): ` +
        `${C * M} filters of ${k}×${k}, ` +
        "coloured by the input channel each one reads",
    );
    filters.replaceChildren();
    filters.classList.toggle("d2ldw-reshaped", reshaped);
    filters.style.gridTemplateColumns = reshaped
      ? `auto repeat(${M}, max-content)`
      : "";
    let lastChannel = -1;
    for (const [o, c, m] of rows) {
      if (reshaped && c !== lastChannel) {
        filters.append(h("span", { class: "d2ldw-row-label", text: `c=${c}` }));
      }
      lastChannel = c;
      const colour = PALETTE[c % PALETTE.length];
      const card = h(
        "button",
        {
          type: "button",
          class: "d2ldw-filter",
          "data-output-channel": o,
          "data-input-channel": c,
          "data-index-in-channel": m,
          title: `w[${o}, 0] reads input channel ${c}`,
        },
        [
          drawFilter(k, colour, 0.35 + 0.65 * (M === 1 ? 1 : 1 - m / M)),
          h("span", {
            class: "d2ldw-filter-label",
            text: reshaped ? `m=${m}` : `o=${o}`,
          }),
        ],
      );
      card.style.borderColor = colour;
      if (o === chosen) card.classList.add("d2ldw-chosen");
      card.addEventListener("click", () => {
        chosen = o;
        refresh();
      });
      filters.append(card);
    }
    const [, c, m] = rows[chosen];
    detail.replaceChildren(
      h("code", { text: `w[${chosen}, 0]` }),
      " is output channel ",
      h("b", { text: chosen }),
      "; it reads input channel ",
      h("b", {
        class: "d2ldw-detail-channel",
        text: `${c} = ${chosen} // ${M}`,
      }),
      " and is filter ",
      h("b", { text: m }),
      " of that channel: ",
      h("code", { text: `w.reshape(${C}, ${M}, ${k}, ${k})[${c}, ${m}]` }),
      ".",
    );
    const strip = h("div", { class: "d2ldw-strip" });
    for (const [o, channel] of rows) {
      for (let t = 0; t < k * k; t++) {
        const element = h("span", {
          class: "d2ldw-element",
          "data-input-channel": channel,
        });
        element.style.background = PALETTE[channel % PALETTE.length];
        if (o === chosen) element.classList.add("d2ldw-chosen");
        strip.append(element);
      }
    }
    memory.replaceChildren(
      h("div", {
        text:
          `memory, row-major (${C * M * k * k} numbers): the ${M * k * k} of ` +
          "channel 0 first, then channel 1's, …",
      }),
      strip,
    );
  }
  refresh();
}
