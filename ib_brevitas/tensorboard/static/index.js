// Entry of the Information Plane tab: TensorBoard imports this module and calls render().
// Every module is named here so the browser fetches them all at once, not level by level.
import "./static/dom.js";
import "./static/scales.js";
import "./static/labels.js";
import "./static/axes.js";
import "./static/api.js";
import "./static/controls.js";
import "./static/plane.js";
import "./static/epochs.js";
import "./static/hardware.js";
export { render } from "./static/app.js";
