// Entry of the Information Plane tab: TensorBoard imports this module and calls render().
export { render } from "./static/app.js";
