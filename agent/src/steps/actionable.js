// Waits, in the page, until the first element matching a selector can take a user's action,
// then optionally runs `action(element)` on it — all in one evaluation, so the check and the
// action see the same element. Called as (selector, want, timeoutMs, action) and resolves to
// { ok: true, x, y, value } or { ok: false, reason } (reason completes "'<selector>' ...").
//
// The checks (Playwright's actionability checks), each only when `want` asks for it:
//   visible   - it has a box, and `visibility: visible`;
//   stable    - its box was the same on two consecutive animation frames (not animating);
//   enabled   - not a disabled control, not inside `aria-disabled="true"`;
//   editable  - enabled, and a text input, textarea or contenteditable that is not read-only;
//   scroll    - its centre is scrolled into the viewport;
//   hit       - the element the browser finds at its centre is it, or inside it (for a control
//               inside a button or link, the whole button or link counts);
//   intercept - keep checking at the moment of the press: see `install` below.
// They are re-run on every animation frame (and every 100 ms, since a hidden page gets no
// frames) until they all pass or the time is up.
async (selector, want, timeoutMs, action) => {
  const deadline = performance.now() + timeoutMs;
  const frame = () => new Promise((resolve) => {
    let done = false;
    const go = () => { if (!done) { done = true; resolve(); } };
    requestAnimationFrame(go);
    setTimeout(go, 100);
  });
  // `<div id=x class=a b>`: enough to recognise an element in a message.
  const describe = (e) => {
    if (!(e instanceof Element)) return "nothing";
    let text = "<" + e.localName;
    if (e.id) text += " id=" + e.id;
    const classes = typeof e.className === "string" ? e.className.trim().split(/\s+/) : [];
    if (classes[0]) text += " class=" + classes.slice(0, 3).join(" ");
    return text + ">";
  };
  // The element under (x, y), looking inside open shadow roots as the browser's hit test does.
  const hitAt = (x, y) => {
    let root = document, hit = null;
    for (;;) {
      const inner = root.elementFromPoint(x, y);
      if (!inner || inner === hit) return hit;
      hit = inner;
      if (!inner.shadowRoot) return hit;
      root = inner.shadowRoot;
    }
  };
  // Is `node` `outer` or inside it (crossing shadow roots)?
  const within = (outer, node) => {
    for (let n = node; n; n = n.parentNode || n.host) if (n === outer) return true;
    return false;
  };
  const disabled = (e) => {
    if (e.matches("button, input, select, textarea, option, optgroup, fieldset") && e.matches(":disabled")) {
      return "is disabled";
    }
    if (e.closest("[aria-disabled=true]")) return "is disabled (aria-disabled)";
    return null;
  };
  const notEditable = (e) => {
    if (!e.matches("input, textarea") && !e.isContentEditable) {
      return "is not an input, a textarea or an editable element";
    }
    if (e.matches("input") && ["checkbox", "radio", "file", "submit", "button", "image", "reset", "hidden"].includes(e.type)) {
      return "is an input of type " + e.type + ", which takes no typing";
    }
    if (e.readOnly || e.getAttribute("aria-readonly") === "true") return "is read-only";
    return null;
  };
  // Playwright's hit-target interceptor: the page may change between this check and the
  // press, so the first trusted pointer event is checked again when it arrives. If it would
  // land elsewhere (an overlay came back, the element was replaced), every event of this
  // click is stopped before the page sees it, and the caller retries the whole click: a
  // blocked click never reached the application, so trying again cannot double it.
  const install = (target) => {
    const key = Symbol.for("liveload.hitTarget");
    if (window[key]) window[key].stop();
    const state = { checked: false, verdict: null, pressed: false, clicked: false };
    const types = ["pointerdown", "mousedown", "pointerup", "mouseup", "click"];
    const listener = (event) => {
      if (!event.isTrusted) return;
      if (!state.checked) {
        state.checked = true;
        const hit = event.composedPath()[0];
        if (!target.isConnected) state.verdict = "was replaced before the press landed";
        else if (!within(target, hit)) state.verdict = "is covered by " + describe(hit);
      }
      if (state.verdict) {
        event.preventDefault();
        event.stopImmediatePropagation();
        return;
      }
      if (event.type === "pointerdown" || event.type === "mousedown") state.pressed = true;
      if (event.type === "click") state.clicked = true;
    };
    for (const type of types) window.addEventListener(type, listener, true);
    state.stop = () => {
      for (const type of types) window.removeEventListener(type, listener, true);
      if (window[key] === state) delete window[key];
      return { verdict: state.verdict, pressed: state.pressed, clicked: state.clicked };
    };
    window[key] = state;
  };

  let previous = null;
  const check = (e) => {
    if (!e) { previous = null; return "matches no element"; }
    const box = e.getBoundingClientRect();
    if (want.visible) {
      if (e.getClientRects().length === 0) return "is not visible (display: none, on it or an ancestor)";
      const visibility = getComputedStyle(e).visibility;
      if (visibility !== "visible") return "is not visible (visibility: " + visibility + ")";
      if (box.width <= 0 || box.height <= 0) return "is not visible (it has no size)";
    }
    if (want.stable) {
      const same = previous && previous.e === e && previous.x === box.x && previous.y === box.y
        && previous.w === box.width && previous.h === box.height;
      previous = { e, x: box.x, y: box.y, w: box.width, h: box.height };
      if (!same) return "is not stable (it moved or changed size between two animation frames)";
    }
    if (want.enabled || want.editable) {
      const why = disabled(e);
      if (why) return why;
    }
    if (want.editable) {
      const why = notEditable(e);
      if (why) return why;
    }
    const x = box.left + box.width / 2, y = box.top + box.height / 2;
    if (want.scroll && (x < 0 || y < 0 || x >= innerWidth || y >= innerHeight)) {
      e.scrollIntoView({ block: "center", inline: "center", behavior: "instant" });
      previous = null; // It moved: stability is measured again.
      return "is outside the viewport, and scrolling does not bring it in";
    }
    if (want.hit) {
      const target = e.closest("button, a, [role=button], [role=link]") || e;
      const hit = hitAt(x, y);
      if (!hit || !within(target, hit)) return "is covered by " + describe(hit);
      if (want.intercept) install(target);
    }
    return null;
  };

  for (;;) {
    let e;
    try {
      e = document.querySelector(selector);
    } catch (error) {
      return { ok: false, final: true, reason: "is not a valid CSS selector" };
    }
    const reason = check(e);
    if (reason === null) {
      const box = e.getBoundingClientRect();
      const value = action ? action(e) : null;
      return { ok: true, x: box.left + box.width / 2, y: box.top + box.height / 2, value };
    }
    if (performance.now() >= deadline) return { ok: false, reason };
    await frame();
  }
}
