// Waits, in the page, until `check(helpers)` is truthy: tested at once, then on every
// animation frame (and every 100 ms, since a hidden page gets no frames), so a condition is
// seen within a frame of becoming true without a DevTools round trip per test. Called as
// (check, timeoutMs); resolves to { ok: true } or, when the time is up, { ok: false, error }
// with the last exception `check` threw (a condition may throw while the page is not ready:
// `window.socket.connected` before `window.socket` exists).
async (check, timeoutMs) => {
  const helpers = {
    // Visible as a user sees it: a box with a size, and `visibility: visible`.
    visible: (e) => {
      if (!e || e.getClientRects().length === 0) return false;
      const box = e.getBoundingClientRect();
      return box.width > 0 && box.height > 0 && getComputedStyle(e).visibility === "visible";
    },
    // `*` matches any run of characters; everything else matches itself.
    glob: (pattern, text) => {
      const escaped = pattern.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&"));
      return new RegExp("^" + escaped.join(".*") + "$", "s").test(text);
    },
  };
  return await new Promise((resolve) => {
    let done = false, error = null, timer = 0;
    const test = () => {
      if (done) return;
      try {
        if (check(helpers)) {
          done = true;
          clearTimeout(timer);
          resolve({ ok: true });
        }
      } catch (e) {
        error = String((e && e.message) || e);
      }
    };
    const onFrame = () => { test(); if (!done) requestAnimationFrame(onFrame); };
    const onTimer = () => { test(); if (!done) setTimeout(onTimer, 100); };
    timer = setTimeout(() => { test(); if (!done) { done = true; resolve({ ok: false, error }); } }, timeoutMs);
    onFrame();
    setTimeout(onTimer, 100);
  });
}
