// Loaded after require.js and before the widget manager (embed-amd.js) on pages
// with widgets: every module the widgets need comes from the book's own
// _static/widgets/ folder, so the pages work offline, at any depth and under
// any URL prefix. The URLs derive from this script's own address, never from
// the site root.
(function () {
  var here = document.currentScript.src;
  var folder = here.slice(0, here.lastIndexOf("/") + 1);
  // embed-amd.js defines these modules itself; mapping their names into this
  // folder makes the font files they reference (relative to each module's URL)
  // load from here too.
  var paths = { anywidget: folder + "anywidget" };
  ["base", "base7", "controls", "controls7", "html-manager"].forEach(
    function (name) {
      paths["@jupyter-widgets/" + name] = folder + name;
    },
  );
  paths["@jupyter-widgets/html-manager/dist/libembed-amd"] =
    folder + "libembed-amd";
  window.__jupyter_widgets_assets_path__ = folder;
  window.requirejs.config({ paths: paths });
  // embed-amd.js falls back to this "CDN" for a module it cannot find: point it
  // at this folder too, so an unknown module is a local 404 (which the tests
  // catch), not a request to jsDelivr.
  document.currentScript.setAttribute(
    "data-jupyter-widgets-cdn",
    folder + "cdn/",
  );
})();
