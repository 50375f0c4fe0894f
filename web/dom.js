// The page builds its DOM from elements and text only: nothing it creates is parsed as HTML.

/** A new `tag` element with an optional class and text. */
export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function button(label, onClick) {
  const node = element("button", null, label);
  node.type = "button";
  node.addEventListener("click", onClick);
  return node;
}
