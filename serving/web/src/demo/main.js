// The demo shop: a tiny hash-routed page that reports behaviour to the widget (page changes,
// add-to-cart, an order whose delivery failed), so proactive messages can be seen working.

const pages = { "/": document.getElementById("page-home"), "/checkout": document.getElementById("page-checkout") };
const cart = [];

function chat(method, ...args) {
  // the widget script is deferred: it may not be there yet, and it may be blocked altogether
  if (window.LingxiChat) return window.LingxiChat[method](...args);
  return undefined;
}

function route() {
  const path = location.hash.replace(/^#/, "") || "/";
  const current = pages[path] ? path : "/";
  for (const [name, node] of Object.entries(pages)) node.hidden = name !== current;
  chat("page", current);
  document.getElementById("checkout-summary").textContent = cart.length
    ? `共 ${cart.length} 件商品。` : "购物车是空的。";
}

document.querySelectorAll("[data-add]").forEach((button) => {
  button.addEventListener("click", () => {
    cart.push(button.dataset.add);
    document.getElementById("cart-count").textContent = String(cart.length);
    chat("track", "add_to_cart", { product: button.dataset.add, quantity: 1 });
  });
});

document.getElementById("delivery-failed").addEventListener("click", () => {
  chat("track", "order_status", { order_id: "A20261111001", status: "delivery_failed" });
});

document.getElementById("pay").addEventListener("click", () => {
  chat("track", "checkout", { items: cart.length });
});

window.addEventListener("hashchange", route);
window.addEventListener("load", route);
