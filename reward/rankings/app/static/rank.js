// Ranking page: reorder by drag and drop or keyboard, submit with an idempotency key, show saved only after
// the server confirms the commit; undo the last ranking for a short while; a lease countdown with renew.
// Model text is only ever set with textContent (never innerHTML); Markdown (when on) arrives sanitised by the
// server and is still rebuilt here element by element from an allowlist.
(function () {
  "use strict";
  const app = document.getElementById("rank-app");
  if (!app) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const allowTies = app.dataset.allowTies === "true";
  const list = document.getElementById("cards");
  const status = document.getElementById("save-status");
  const live = document.getElementById("live");
  const submitButton = document.getElementById("submit");
  const skipForm = document.getElementById("skip-form");
  const flagForm = document.getElementById("flag-form");
  const undoButton = document.getElementById("undo");
  const leaseLeft = document.getElementById("lease-left");
  const renewButton = document.getElementById("renew");
  const undoMs = 1000 * Number(app.dataset.undoSeconds || 0);
  let taskId = app.dataset.taskId ? Number(app.dataset.taskId) : null;
  let idemKey = newKey();
  let busy = false;
  let dragged = null;
  let expiresAt = Date.now() + 1000 * Number(app.dataset.expiresIn || 0);
  let lastRanking = null; // {id, until}: the ranking Undo reopens
  let undoTimer = null;

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    // randomUUID needs a secure context; getRandomValues works on plain http too.
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function cards() {
    return Array.from(list.querySelectorAll(".card"));
  }

  // ranks[position] = rank (1 = best); a card tied with the one above shares its rank (1, 1, 3).
  function currentRanks() {
    const cs = cards();
    const ranks = new Array(cs.length);
    let prev = 0;
    cs.forEach((card, i) => {
      const box = card.querySelector(".tie-box");
      const rank = i > 0 && box && box.checked ? prev : i + 1;
      ranks[Number(card.dataset.position)] = rank;
      card.querySelector(".rank").textContent = String(rank);
      card.setAttribute("aria-label", "Rank " + rank + " of " + cs.length);
      prev = rank;
    });
    return ranks;
  }

  function refresh() {
    cards().forEach((card, i) => {
      const label = card.querySelector(".tie");
      if (label) {
        label.hidden = i === 0;
        if (i === 0) label.querySelector(".tie-box").checked = false;
      }
    });
    currentRanks();
  }

  function say(text) {
    live.textContent = text;
  }

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function moveTo(card, index) {
    const cs = cards();
    const from = cs.indexOf(card);
    index = Math.max(0, Math.min(cs.length - 1, index));
    if (index === from) return;
    const rest = cs.filter((c) => c !== card);
    list.insertBefore(card, rest[index] || null);
    card.focus();
    refresh();
    say("Moved to place " + (index + 1));
  }

  list.addEventListener("keydown", (e) => {
    const card = e.target.closest(".card");
    if (!card || e.target.tagName === "INPUT" || e.ctrlKey || e.metaKey || e.altKey) return;
    const i = cards().indexOf(card);
    if (e.key === "ArrowUp" || e.key === "k") moveTo(card, i - 1);
    else if (e.key === "ArrowDown" || e.key === "j") moveTo(card, i + 1);
    else if (e.key === "Home") moveTo(card, 0);
    else if (e.key === "End") moveTo(card, cards().length - 1);
    else if (/^[1-9]$/.test(e.key)) moveTo(card, Number(e.key) - 1);
    else if ((e.key === "t" || e.key === "T") && allowTies && i > 0) {
      const box = card.querySelector(".tie-box");
      box.checked = !box.checked;
      refresh();
      say(box.checked ? "Tied with the response above" : "No longer tied");
    } else return;
    e.preventDefault();
  });

  list.addEventListener("change", (e) => {
    if (e.target.classList.contains("tie-box")) refresh();
  });

  list.addEventListener("dragstart", (e) => {
    dragged = e.target.closest(".card");
    if (!dragged) return;
    dragged.classList.add("dragging");
    e.dataTransfer.effectAllowed = "move";
    e.dataTransfer.setData("text/plain", dragged.dataset.position);
  });
  list.addEventListener("dragover", (e) => {
    if (!dragged) return;
    e.preventDefault();
    const target = e.target.closest(".card");
    if (!target || target === dragged) return;
    const cs = cards();
    // Moving down: land after the card under the pointer; moving up: before it.
    if (cs.indexOf(dragged) < cs.indexOf(target)) list.insertBefore(dragged, target.nextSibling);
    else list.insertBefore(dragged, target);
  });
  list.addEventListener("drop", (e) => {
    e.preventDefault();
  });
  list.addEventListener("dragend", () => {
    if (dragged) dragged.classList.remove("dragging");
    dragged = null;
    refresh();
  });

  async function post(path, body) {
    const resp = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    });
    let data = null;
    try {
      data = await resp.json();
    } catch (err) {
      data = null;
    }
    return { ok: resp.ok, status: resp.status, data: data };
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  async function submit() {
    if (busy || taskId === null) return;
    busy = true;
    submitButton.disabled = true;
    const ranks = currentRanks();
    setStatus("saving", "Saving…");
    // Retries reuse the same idempotency key, so a POST that committed but lost its reply is not doubled.
    for (let attempt = 0; attempt < 4; attempt++) {
      try {
        const r = await post("/api/tasks/" + taskId + "/submit", { ranks: ranks, idempotency_key: idemKey, next: true });
        if (r.ok && r.data && r.data.saved) {
          setStatus("saved", (r.data.replaced ? "Replaced ✓ ranking #" : "Saved ✓ ranking #") + r.data.ranking_id);
          offerUndo(r.data.ranking_id);
          busy = false;
          submitButton.disabled = false;
          if (r.data.next) render(r.data.next.task, r.data.next.progress);
          else await loadNext();
          return;
        }
        if (r.status < 500) {
          const detail = r.data && r.data.detail ? r.data.detail : "HTTP " + r.status;
          setStatus("error", "Not saved: " + detail);
          busy = false;
          submitButton.disabled = false;
          return;
        }
      } catch (err) {
        // Network error: fall through and retry with the same key.
      }
      setStatus("retrying", "Not saved yet, retrying…");
      await sleep(500 * (attempt + 1));
    }
    setStatus("error", "Not saved: the server did not answer. Press Submit again to retry.");
    busy = false;
    submitButton.disabled = false;
  }

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Model text as text nodes, each run of U+FFFD (bytes that are not valid text) shown as one marked "?", as the
  // server's `marked` filter does: people never read a replacement character as part of a response.
  function appendMarked(to, text) {
    String(text).split(/\uFFFD+/).forEach((part, i) => {
      if (i > 0) {
        const mark = el("span", "bad-bytes", "?");
        mark.title = "bytes of the model's output that are not valid text";
        to.append(mark);
      }
      if (part) to.append(document.createTextNode(part));
    });
  }
  function textBlock(text) {
    const box = el("div", "text");
    appendMarked(box, text);
    return box;
  }

  function render(task, progress) {
    if (progress) {
      document.getElementById("p-ranked").textContent = String(progress.ranked);
      document.getElementById("p-available").textContent = String(progress.available);
    }
    if (!task) {
      taskId = null;
      document.getElementById("task").hidden = true;
      document.getElementById("empty").hidden = false;
      return;
    }
    taskId = task.task_id;
    idemKey = newKey();
    app.dataset.taskId = String(task.task_id);
    app.dataset.k = String(task.completions.length);
    document.getElementById("task-label").textContent = "task " + task.task_id;
    const prompt = document.getElementById("prompt");
    prompt.replaceChildren();
    if (task.is_chat) {
      task.prompt.forEach((m) => {
        const msg = el("div", "msg");
        msg.append(el("span", "role", m.role), textBlock(m.content));
        prompt.append(msg);
      });
    } else {
      prompt.append(textBlock(task.prompt));
    }
    list.replaceChildren();
    task.completions.forEach((c, i) => {
      const card = el("li", "card");
      card.tabIndex = 0;
      card.draggable = true;
      card.dataset.position = String(c.position);
      card.setAttribute("aria-roledescription", "sortable item");
      const rank = el("span", "rank", String(i + 1));
      rank.setAttribute("aria-hidden", "true");
      card.append(rank);
      if (c.model) card.append(el("span", "model", c.model));
      card.append(c.html !== undefined ? markdownNode(c.html) : textBlock(c.text));
      if (allowTies) {
        const label = el("label", "tie");
        const box = el("input", "tie-box");
        box.type = "checkbox";
        label.append(box, document.createTextNode(" tie with above"));
        card.append(label);
      }
      list.append(card);
    });
    skipForm.action = "/tasks/" + task.task_id + "/skip";
    flagForm.action = "/tasks/" + task.task_id + "/flag";
    flagForm.reset();
    flagForm.closest("details").open = false;
    // Revising after an undo: show the earlier order and ties; skip and flag are not offered for it.
    const revising = Boolean(task.revise);
    skipForm.hidden = revising;
    flagForm.closest("details").hidden = revising;
    if (revising) restoreOrder(task.revise.ranks);
    expiresAt = Date.now() + 1000 * Number(task.expires_in || 0);
    tick();
    refresh();
    window.scrollTo(0, 0);
    focusFirst();
  }

  // Keyboard users start on the first card: no Tab presses after a load or a submit.
  function focusFirst() {
    const first = cards()[0];
    if (first) first.focus({ preventScroll: true });
  }

  // Cards in the order of earlier ranks (ties kept as ties), for revising a ranking after an undo.
  function restoreOrder(ranks) {
    const cs = cards().slice().sort((a, b) => ranks[Number(a.dataset.position)] - ranks[Number(b.dataset.position)]);
    cs.forEach((card) => list.append(card));
    cs.forEach((card, i) => {
      const box = card.querySelector(".tie-box");
      if (box && i > 0) box.checked = ranks[Number(card.dataset.position)] === ranks[Number(cs[i - 1].dataset.position)];
    });
  }

  // Sanitised Markdown from the server, rebuilt through an allowlist of elements (text stays text).
  const ALLOWED = new Set(["P", "BR", "STRONG", "EM", "CODE", "PRE", "UL", "OL", "LI", "BLOCKQUOTE", "HR", "DEL", "S",
    "H1", "H2", "H3", "H4", "H5", "H6", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD"]);
  function copySafe(from, to) {
    from.childNodes.forEach((node) => {
      if (node.nodeType === Node.TEXT_NODE) appendMarked(to, node.textContent);
      else if (node.nodeType === Node.ELEMENT_NODE) {
        const keep = ALLOWED.has(node.tagName);
        const copy = keep ? document.createElement(node.tagName.toLowerCase()) : document.createDocumentFragment();
        const cls = node.getAttribute("class") || "";
        if (keep && node.tagName === "CODE" && /^language-[\w-]+$/.test(cls)) copy.className = cls;
        copySafe(node, copy);
        to.append(copy);
      }
    });
  }
  function markdownNode(html) {
    const box = el("div", "text md");
    copySafe(new DOMParser().parseFromString(html, "text/html").body, box);
    return box;
  }

  // Undo: for a short while after a submit, reopen that ranking (the task comes back; the next submit replaces it).
  function offerUndo(rankingId) {
    if (!undoButton || undoMs <= 0) return;
    lastRanking = { id: rankingId, until: Date.now() + undoMs };
    undoButton.hidden = false;
    clearTimeout(undoTimer);
    undoTimer = setTimeout(() => {
      undoButton.hidden = true;
      lastRanking = null;
    }, undoMs);
  }

  async function undo() {
    if (!lastRanking || busy) return;
    const r = await post("/api/rankings/" + lastRanking.id + "/undo", {});
    undoButton.hidden = true;
    lastRanking = null;
    if (r.ok && r.data.task) {
      render(r.data.task, null);
      setStatus("revising", "Change your ranking and submit again; it replaces the one you saved.");
    } else setStatus("error", "Cannot undo: " + ((r.data && r.data.detail) || "HTTP " + r.status));
  }

  // Lease countdown: how long this task stays reserved for you.
  function tick() {
    if (!leaseLeft) return;
    const left = Math.max(0, Math.round((expiresAt - Date.now()) / 1000));
    leaseLeft.textContent = left > 0 ? Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0") : "expired";
    leaseLeft.dataset.state = left === 0 ? "expired" : left < 60 ? "low" : "ok";
    leaseLeft.dataset.seconds = String(left);
  }
  setInterval(tick, 1000);

  async function renew() {
    if (taskId === null) return false;
    const r = await post("/api/tasks/" + taskId + "/renew", {});
    if (r.ok) {
      expiresAt = Date.now() + 1000 * Number(r.data.lease_seconds);
      tick();
      return true;
    }
    if (r.status === 409) setStatus("error", "This task was reassigned while idle; your ranking cannot be saved. Reload for a new one.");
    return false;
  }

  async function loadNext() {
    try {
      const r = await post("/api/tasks/next", {});
      if (r.ok) render(r.data.task, r.data.progress);
      else setStatus("error", "Could not load the next task (HTTP " + r.status + "); reload the page.");
    } catch (err) {
      setStatus("error", "Could not load the next task; reload the page.");
    }
  }

  // Heartbeat: renew the lease while the annotator is active, so slow careful work is not reassigned; an idle
  // tab stops renewing and its task goes back to the pool when the lease runs out.
  const leaseMs = 1000 * Number(app.dataset.leaseSeconds || 600);
  let lastActivity = Date.now();
  ["keydown", "pointerdown", "dragstart", "scroll"].forEach((name) =>
    document.addEventListener(name, () => (lastActivity = Date.now()), { passive: true })
  );
  setInterval(async () => {
    if (taskId === null || busy || Date.now() - lastActivity > leaseMs / 2) return;
    try {
      await renew();
    } catch (err) {
      // Offline for a moment: the next beat or the submit will tell.
    }
  }, Math.max(5000, Math.min(60000, leaseMs / 3)));

  submitButton.addEventListener("click", submit);
  if (undoButton) undoButton.addEventListener("click", undo);
  if (renewButton)
    renewButton.addEventListener("click", async () => {
      if (await renew()) setStatus("idle", "Lease renewed");
    });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      submit();
    }
  });

  skipForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (taskId === null) return;
    const r = await post("/api/tasks/" + taskId + "/skip", {});
    if (r.ok) {
      setStatus("idle", "Skipped task " + taskId);
      await loadNext();
    } else setStatus("error", "Skip failed (HTTP " + r.status + ")");
  });

  flagForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (taskId === null) return;
    const data = new FormData(flagForm);
    const r = await post("/api/tasks/" + taskId + "/flag", { kind: data.get("kind"), comment: data.get("comment") || "" });
    if (r.ok) {
      setStatus("saved", "Flagged task " + taskId);
      await loadNext();
    } else setStatus("error", "Flag not saved (HTTP " + r.status + ")");
  });

  refresh();
  tick();
  focusFirst();
})();
