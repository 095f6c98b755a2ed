// Shared user-interface helpers of the explorers: elements, sliders, model
// syncing.

export const PALETTE = [
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#17becf",
];
const SVG_NS = "http://www.w3.org/2000/svg";

export function h(tag, attributes = {}, children = []) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") element.textContent = value;
    else element.setAttribute(key, value);
  }
  for (const child of children) element.append(child);
  return element;
}

export function svg(tag, attributes = {}, children = []) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") element.textContent = value;
    else element.setAttribute(key, value);
  }
  for (const child of children) element.append(child);
  return element;
}

// Send a value to the kernel when there is one; a static page has no kernel,
// and then the widget manager's save_changes throws (no comm): the explorer
// runs locally all the same.
export function store(model, name, value) {
  model.set(name, value);
  try {
    model.save_changes();
  } catch (error) {
    // no kernel behind this page
  }
}

// A labelled slider over an explicit list of values (the Python side's
// *_CONTROLS).
export function slider(model, name, label, values, onChange) {
  const input = h("input", {
    type: "range",
    min: "0",
    max: String(values.length - 1),
    step: "1",
    "data-control": name,
    "aria-label": label,
  });
  const shown = h("span", { class: "d2ldw-value" });
  const set = (value) => {
    const index = Math.max(0, values.indexOf(value));
    input.value = String(index);
    shown.textContent = String(values[index]);
  };
  set(model.get(name));
  input.addEventListener("input", () => {
    const value = values[Number(input.value)];
    shown.textContent = String(value);
    store(model, name, value);
    onChange();
  });
  model.on(`change:${name}`, () => {
    set(model.get(name));
    onChange();
  });
  const row = h("label", { class: "d2ldw-control" }, [
    h("span", { class: "d2ldw-label", text: label }),
    shown,
    input,
  ]);
  return { row, input, set };
}

// A name for one view's radio buttons, unique on the page (a page may show
// several views).
let views = 0;
export function radioGroup(prefix) {
  views += 1;
  return `d2ldw-${prefix}-${views}`;
}

export function choices(model, name) {
  return model.get("controls")[name];
}
