// The convolution explorer (d2ldw.widgets.ConvExplorer). Concatenated after
// explorers_core.js and explorers_ui.js into one ES module.

const CONV_LABELS = {
  size: "input size n",
  kernel_size: "kernel k",
  stride: "stride s",
  padding: "padding p",
  dilation: "dilation d",
  in_channels: "in channels C",
  out_channels: "out channels O",
  groups: "groups G",
  multiplier: "multiplier M",
};

function readControls(model) {
  const controls = {};
  for (const name of Object.keys(CONV_LABELS)) controls[name] = model.get(name);
  controls.depthwise = model.get("depthwise");
  return controls;
}

function drawWindow(c, result, position) {
  const padded = c.size + 2 * c.padding;
  const cell = Math.max(8, Math.min(22, Math.floor(260 / padded)));
  const side = padded * cell;
  const picture = svg("svg", {
    width: side + 2,
    height: side + 2,
    class: "d2ldw-grid",
    viewBox: `-1 -1 ${side + 2} ${side + 2}`,
  });
  for (let i = 0; i < padded; i++) {
    for (let j = 0; j < padded; j++) {
      const inside =
        i >= c.padding &&
        i < c.padding + c.size &&
        j >= c.padding &&
        j < c.padding + c.size;
      picture.append(
        svg("rect", {
          x: j * cell,
          y: i * cell,
          width: cell,
          height: cell,
          class: inside ? "d2ldw-cell" : "d2ldw-pad",
        }),
      );
    }
  }
  if (result.outputShape) {
    const rows = windowTaps(
      position[0],
      c.kernel_size,
      c.stride,
      c.dilation,
      c.padding,
    );
    const cols = windowTaps(
      position[1],
      c.kernel_size,
      c.stride,
      c.dilation,
      c.padding,
    );
    for (const r of rows) {
      for (const q of cols) {
        picture.append(
          svg("rect", {
            x: (q + c.padding) * cell + 1,
            y: (r + c.padding) * cell + 1,
            width: cell - 2,
            height: cell - 2,
            class: "d2ldw-tap",
            "data-row": r,
            "data-col": q,
          }),
        );
      }
    }
  }
  return picture;
}

function drawOutput(result, position, pick) {
  const [, height, width] = result.outputShape;
  const cell = Math.max(
    8,
    Math.min(22, Math.floor(160 / Math.max(height, width))),
  );
  const picture = svg("svg", {
    width: width * cell + 2,
    height: height * cell + 2,
    class: "d2ldw-grid d2ldw-output-grid",
    viewBox: `-1 -1 ${width * cell + 2} ${height * cell + 2}`,
  });
  for (let i = 0; i < height; i++) {
    for (let j = 0; j < width; j++) {
      const chosen = i === position[0] && j === position[1];
      const square = svg("rect", {
        x: j * cell,
        y: i * cell,
        width: cell,
        height: cell,
        class: chosen ? "d2ldw-out d2ldw-chosen" : "d2ldw-out",
        "data-row": i,
        "data-col": j,
      });
      square.addEventListener("click", () => pick([i, j]));
      picture.append(square);
    }
  }
  return picture;
}

function drawChannels(result) {
  const [inChannels] = result.inputShape;
  const outChannels = result.weightShape[0];
  const step = Math.min(
    36,
    Math.floor(600 / Math.max(inChannels, outChannels)),
  );
  const width = Math.max(inChannels, outChannels) * step + 70;
  const picture = svg("svg", {
    width,
    height: 96,
    class: "d2ldw-channels",
    viewBox: `0 0 ${width} 96`,
  });
  const x = (index, count) =>
    70 +
    (index + 0.5) * step +
    ((Math.max(inChannels, outChannels) - count) * step) / 2;
  picture.append(
    svg("text", { x: 0, y: 20, text: "input" }),
    svg("text", { x: 0, y: 84, text: "output" }),
  );
  // the links need valid groups only: they are drawn even when the window does
  // not fit
  if (inChannels % result.groups === 0 && outChannels % result.groups === 0) {
    const links = channelConnections(inChannels, outChannels, result.groups);
    const perGroup = outChannels / result.groups;
    links.forEach((row, o) =>
      row.forEach((linked, c) => {
        if (!linked) return;
        picture.append(
          svg("line", {
            x1: x(c, inChannels),
            y1: 22,
            x2: x(o, outChannels),
            y2: 74,
            class: "d2ldw-link",
            stroke: PALETTE[Math.floor(o / perGroup) % PALETTE.length],
            "data-in": c,
            "data-out": o,
          }),
        );
      }),
    );
  }
  for (let c = 0; c < inChannels; c++) {
    picture.append(
      svg("circle", {
        cx: x(c, inChannels),
        cy: 16,
        r: 6,
        class: "d2ldw-node",
      }),
    );
  }
  for (let o = 0; o < outChannels; o++) {
    picture.append(
      svg("circle", {
        cx: x(o, outChannels),
        cy: 80,
        r: 6,
        class: "d2ldw-node",
      }),
    );
  }
  return picture;
}

function renderConvExplorer(model, el) {
  const root = h("div", { class: "d2ldw-explorer d2ldw-conv-explorer" });
  const controlsBox = h("div", { class: "d2ldw-controls" });
  const sliders = {};
  let position = [0, 0];
  let timer = null;
  const update = () => refresh();
  for (const [name, label] of Object.entries(CONV_LABELS)) {
    sliders[name] = slider(model, name, label, choices(model, name), update);
    controlsBox.append(sliders[name].row);
  }
  const modes = h("div", { class: "d2ldw-modes" });
  const group = radioGroup("mode");
  for (const [value, text] of [
    [false, "grouped: choose O and G"],
    [true, "depthwise: G = C, O = C·M"],
  ]) {
    const radio = h("input", {
      type: "radio",
      name: group,
      "data-control": value ? "depthwise" : "grouped",
    });
    radio.checked = model.get("depthwise") === value;
    radio.addEventListener("change", () => {
      store(model, "depthwise", value);
      refresh();
    });
    modes.append(h("label", {}, [radio, " " + text]));
  }
  model.on("change:depthwise", () => {
    modes.querySelectorAll("input").forEach((radio, i) => {
      radio.checked = (i === 1) === model.get("depthwise");
    });
    refresh();
  });
  const summary = h("div", { class: "d2ldw-summary" });
  const error = h("div", { class: "d2ldw-error", role: "alert" });
  const pictures = h("div", { class: "d2ldw-pictures" });
  const player = h("div", { class: "d2ldw-player" });
  const play = h("button", {
    type: "button",
    class: "d2ldw-play",
    text: "▶ play",
  });
  const previous = h("button", {
    type: "button",
    class: "d2ldw-step",
    text: "◀",
  });
  const next = h("button", {
    type: "button",
    class: "d2ldw-step",
    text: "▶",
  });
  const where = h("span", { class: "d2ldw-where" });
  player.append(previous, next, play, where);
  const channels = h("div", { class: "d2ldw-channel-box" });
  root.append(controlsBox, modes, summary, error, pictures, player, channels);
  el.append(root);

  let result = null;
  const stop = () => {
    if (timer !== null) clearInterval(timer);
    timer = null;
    play.textContent = "▶ play";
  };
  const move = (delta) => {
    if (!result || !result.outputShape) return;
    const [, height, width] = result.outputShape;
    const flat =
      (position[0] * width + position[1] + delta + height * width) %
      (height * width);
    position = [Math.floor(flat / width), flat % width];
    draw();
  };
  play.addEventListener("click", () => {
    if (timer !== null) return stop();
    play.textContent = "❚❚ pause";
    timer = setInterval(() => move(1), 700);
  });
  previous.addEventListener("click", () => {
    stop();
    move(-1);
  });
  next.addEventListener("click", () => {
    stop();
    move(1);
  });

  function draw() {
    pictures.replaceChildren(drawWindow(readControls(model), result, position));
    if (result.outputShape) {
      pictures.append(
        h("span", { class: "d2ldw-arrow", text: "→" }),
        drawOutput(result, position, (p) => {
          stop();
          position = p;
          draw();
        }),
      );
      const c = readControls(model);
      const rows = windowTaps(
        position[0],
        c.kernel_size,
        c.stride,
        c.dilation,
        c.padding,
      );
      const cols = windowTaps(
        position[1],
        c.kernel_size,
        c.stride,
        c.dilation,
        c.padding,
      );
      where.replaceChildren(
        "output ",
        h("b", { class: "d2ldw-position", text: formatTuple(position) }),
        ` reads rows ${rows.join(", ")} and columns ${cols.join(", ")}` +
          " (below 0 or from n on: padding)",
      );
    } else {
      where.textContent = "";
    }
  }

  function refresh() {
    const c = readControls(model);
    for (const name of ["out_channels", "groups"])
      sliders[name].input.disabled = c.depthwise;
    sliders.multiplier.input.disabled = !c.depthwise;
    result = exploreConv(c);
    const [o, perGroup, k] = result.weightShape;
    summary.replaceChildren(
      h("div", {}, [
        `input ${formatTuple(result.inputShape)} · weight `,
        h("code", {
          class: "d2ldw-weight-shape",
          text: formatTuple(result.weightShape),
        }),
        `, groups=${result.groups} → output `,
        h("b", {
          class: "d2ldw-output-shape",
          text: result.outputShape ? formatTuple(result.outputShape) : "none",
        }),
      ]),
    );
    if (result.outputShape) {
      const [, height, width] = result.outputShape;
      summary.append(
        h("div", {}, [
          "mult-adds ",
          h("b", {
            class: "d2ldw-mult-adds",
            text: formatCount(result.multAdds),
          }),
          ` = ${o}·${height}·${width} outputs × ${perGroup}·${k}·${k} taps; ` +
            "parameters ",
          h("b", { class: "d2ldw-params", text: formatCount(result.params) }),
          ` = ${o}·${perGroup}·${k}·${k}`,
        ]),
      );
      if (position[0] >= height || position[1] >= width) position = [0, 0];
      play.disabled = previous.disabled = next.disabled = false;
    } else {
      stop();
      play.disabled = previous.disabled = next.disabled = true;
    }
    error.replaceChildren(
      ...(result.error
        ? [
            "ValueError: ",
            h("span", { class: "d2ldw-error-message", text: result.error }),
          ]
        : []),
    );
    error.style.display = result.error ? "" : "none";
    root.dataset.state = result.error ? "error" : "ok";
    channels.replaceChildren(drawChannels(result));
    draw();
  }
  refresh();
  return stop;
}
