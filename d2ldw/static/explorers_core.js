// The arithmetic of d2ldw/explorers.py, d2ldw.conv2d_geometry and
// d2ldw.conv2d_cost, in JavaScript, so that the explorers run on a static page
// with no Python behind them. Error messages are Python's, character for
// character: tests/test_browser.py compares every function here with its Python
// original over the controls' whole ranges.

export const BYTES_PER_ELEMENT = 4;

export function formatTuple(values) {
  return values.length === 1 ? `(${values[0]},)` : `(${values.join(", ")})`;
}

export function convOutSize(n, k, p = 0, s = 1, d = 1) {
  const [before, after] = Array.isArray(p) ? p : [p, p];
  const checks = [
    ["input length n", n, 0],
    ["kernel size k", k, 1],
    ["stride s", s, 1],
    ["dilation d", d, 1],
    ["padding", before, 0],
    ["padding", after, 0],
  ];
  for (const [name, value, low] of checks) {
    if (value < low) throw new Error(`${name} must be >= ${low}, got ${value}`);
  }
  const extent = d * (k - 1) + 1;
  const padded = n + before + after;
  if (extent > padded) {
    throw new Error(
      `kernel extent ${extent} (kernel ${k}, dilation ${d}) ` +
        "is larger than the " +
        `padded input ${padded} (length ${n} + padding ${before} + ${after})`,
    );
  }
  return Math.floor((padded - extent) / s) + 1;
}

function checkedGroups(groups, inChannels, weightShape) {
  const [outChannels, perGroup, kh, kw] = weightShape;
  const implied =
    perGroup && inChannels % perGroup === 0 ? inChannels / perGroup : null;
  const fits = implied !== null && outChannels % implied === 0;
  const hint = fits
    ? `; the weight given, ${formatTuple(weightShape)}, ` +
      `is the one for groups=${implied}`
    : "";
  const rule =
    `with groups=G the weight has shape (${outChannels}, ${inChannels}/G, ` +
    `${kh}, ${kw})`;
  if (groups < 1)
    throw new Error(
      `groups must be a positive int, got ${groups}; ${rule}${hint}`,
    );
  if (inChannels % groups || outChannels % groups) {
    const valid = [];
    for (let g = 1; g <= Math.min(inChannels, outChannels); g++) {
      if (inChannels % g === 0 && outChannels % g === 0) valid.push(g);
    }
    const listed =
      valid.slice(0, 12).join(", ") + (valid.length > 12 ? ", ..." : "");
    throw new Error(
      `groups=${groups} must divide both in_channels=${inChannels} and ` +
        `out_channels=${outChannels} (valid: ${listed}); ${rule}${hint}`,
    );
  }
  if (perGroup * groups !== inChannels) {
    throw new Error(
      `input has ${inChannels} channels, so with groups=${groups} ` +
        "the weight must have shape " +
        `(${outChannels}, ${Math.floor(inChannels / groups)}, ${kh}, ${kw}); ` +
        "got " +
        `${formatTuple(weightShape)}` +
        (fits ? `, the weight for groups=${implied}` : ""),
    );
  }
  return groups;
}

// conv2d_geometry for an unbatched (C, H, W) input and int stride, padding,
// dilation.
export function conv2dGeometry(
  inputShape,
  weightShape,
  stride = 1,
  padding = 0,
  dilation = 1,
  groups = 1,
) {
  const [inChannels, height, width] = inputShape;
  const [outChannels, , kh, kw] = weightShape;
  groups = checkedGroups(groups, inChannels, weightShape);
  if (stride < 1)
    throw new Error(`stride must be >= 1 along both axes, got ${stride}`);
  if (dilation < 1)
    throw new Error(`dilation must be >= 1 along both axes, got ${dilation}`);
  if (padding < 0)
    throw new Error(`padding must be >= 0 along both axes, got ${padding}`);
  const outSize = [];
  for (const [axis, n, k] of [
    ["height", height, kh],
    ["width", width, kw],
  ]) {
    try {
      outSize.push(convOutSize(n, k, padding, stride, dilation));
    } catch (error) {
      throw new Error(`along the ${axis}: ${error.message}`);
    }
  }
  return {
    inChannels,
    outChannels,
    groups,
    outSize,
    outputShape: [outChannels, outSize[0], outSize[1]],
  };
}

export function conv2dCost(
  inputShape,
  weightShape,
  stride = 1,
  padding = 0,
  dilation = 1,
  groups = 1,
) {
  const g = conv2dGeometry(
    inputShape,
    weightShape,
    stride,
    padding,
    dilation,
    groups,
  );
  const outputs = g.outChannels * g.outSize[0] * g.outSize[1];
  const perOutput = (g.inChannels / g.groups) * weightShape[2] * weightShape[3];
  return { multAdds: outputs * perOutput, params: g.outChannels * perOutput };
}

export function channelConnections(inChannels, outChannels, groups) {
  const rows = [];
  for (let o = 0; o < outChannels; o++) {
    const row = [];
    for (let c = 0; c < inChannels; c++) {
      row.push(
        Math.floor(o / (outChannels / groups)) ===
          Math.floor(c / (inChannels / groups)),
      );
    }
    rows.push(row);
  }
  return rows;
}

// explorers.conv_layer_shapes
export function convLayerShapes(
  size,
  kernelSize,
  inChannels,
  outChannels,
  groups,
  depthwise,
  multiplier,
) {
  if (depthwise) {
    outChannels = inChannels * multiplier;
    groups = inChannels;
  }
  const perGroup = inChannels % groups === 0 ? inChannels / groups : 0;
  return {
    inputShape: [inChannels, size, size],
    weightShape: [outChannels, perGroup, kernelSize, kernelSize],
    groups,
  };
}

// explorers.explore_conv
export function exploreConv(c) {
  const layer = convLayerShapes(
    c.size,
    c.kernel_size,
    c.in_channels,
    c.out_channels,
    c.groups,
    c.depthwise,
    c.multiplier,
  );
  const result = {
    ...layer,
    outputShape: null,
    error: null,
    multAdds: null,
    params: null,
  };
  try {
    const g = conv2dGeometry(
      layer.inputShape,
      layer.weightShape,
      c.stride,
      c.padding,
      c.dilation,
      layer.groups,
    );
    const cost = conv2dCost(
      layer.inputShape,
      layer.weightShape,
      c.stride,
      c.padding,
      c.dilation,
      layer.groups,
    );
    return {
      ...result,
      outputShape: g.outputShape,
      multAdds: cost.multAdds,
      params: cost.params,
    };
  } catch (error) {
    return { ...result, error: error.message };
  }
}

// explorers.window_taps: unpadded input indices read by one output position
// along an axis.
export function windowTaps(position, kernelSize, stride, dilation, padding) {
  const taps = [];
  for (let a = 0; a < kernelSize; a++)
    taps.push(position * stride - padding + dilation * a);
  return taps;
}

function product(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

function stage(inputShape, weightShape, stride, padding, groups) {
  const g = conv2dGeometry(inputShape, weightShape, stride, padding, 1, groups);
  const cost = conv2dCost(inputShape, weightShape, stride, padding, 1, groups);
  const elements =
    product(inputShape) + product(weightShape) + product(g.outputShape);
  return {
    multAdds: cost.multAdds,
    params: cost.params,
    bytes: BYTES_PER_ELEMENT * elements,
    outputShape: g.outputShape,
  };
}

// explorers.layer_variants
export function layerVariants(c) {
  const [ci, n, k, size, stride, groups] = [
    c.in_channels,
    c.out_channels,
    c.kernel_size,
    c.size,
    c.stride,
    c.groups,
  ];
  const padding = Math.floor(k / 2);
  const image = [ci, size, size];
  const perGroup = ci % groups === 0 ? ci / groups : 0;
  const stages = {
    full: [[image, [n, ci, k, k], stride, padding, 1]],
    grouped: [[image, [n, perGroup, k, k], stride, padding, groups]],
    depthwise: [[image, [ci, 1, k, k], stride, padding, ci]],
    separable: [
      [image, [ci, 1, k, k], stride, padding, ci],
      [null, [n, ci, 1, 1], 1, 0, 1],
    ],
  };
  const variants = {};
  for (const [name, layers] of Object.entries(stages)) {
    let multAdds = 0,
      params = 0,
      bytes = 0,
      shape = null;
    try {
      for (const [inputShape, weightShape, s, p, g] of layers) {
        const counted = stage(inputShape || shape, weightShape, s, p, g);
        multAdds += counted.multAdds;
        params += counted.params;
        bytes += counted.bytes;
        shape = counted.outputShape;
      }
      variants[name] = {
        multAdds,
        params,
        bytes,
        intensity: (2 * multAdds) / bytes,
        error: null,
      };
    } catch (error) {
      variants[name] = {
        multAdds: null,
        params: null,
        bytes: null,
        intensity: null,
        error: error.message,
      };
    }
  }
  return variants;
}

// explorers.depthwise_filters: [output channel, input channel, index in
// channel] per row.
export function depthwiseFilters(inChannels, multiplier) {
  const filters = [];
  for (let o = 0; o < inChannels * multiplier; o++) {
    filters.push([o, Math.floor(o / multiplier), o % multiplier]);
  }
  return filters;
}

export function formatCount(n) {
  return n.toLocaleString("en-US");
}
