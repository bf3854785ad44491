// The listener's page: pick favourite artists or songs, get ten recommendations with reasons, like or skip them.
"use strict";

const state = { favourites: new Map(), skipped: new Set(), options: [], active: -1, timer: null, searched: null };
const $ = (id) => document.getElementById(id);

// A random version-4 UUID: crypto.randomUUID where the page is a secure context, else the same from
// crypto.getRandomValues (available everywhere), so the listener id is never guessable.
function newId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// The anonymous listener id: "web-" and a random UUID, made once per browser (an older, other-shaped id is
// replaced, since only this shape lets the listener read and erase their data without an admin).
function listenerId() {
  let id = localStorage.getItem("recsys-listener");
  if (!id || !/^web-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id)) {
    id = "web-" + newId(); localStorage.setItem("recsys-listener", id);
  }
  return id;
}

async function call(method, path, body) {
  const init = { method, headers: { "Content-Type": "application/json" } };
  if (body !== undefined) init.body = JSON.stringify(body);
  const answer = await fetch(path, init);
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(data.error || answer.statusText);
  return data;
}

function setStatus(text) { $("status").textContent = text; }

function closeOptions() {
  const list = $("search-results");
  list.hidden = true; list.replaceChildren();
  $("artist-search").setAttribute("aria-expanded", "false");
  $("artist-search").removeAttribute("aria-activedescendant");
  state.options = []; state.active = -1;
}

function highlight(index) {
  state.active = index;
  const items = $("search-results").children;
  for (let i = 0; i < items.length; i++) items[i].setAttribute("aria-selected", String(i === index));
  if (index >= 0) {
    $("artist-search").setAttribute("aria-activedescendant", items[index].id);
    items[index].scrollIntoView({ block: "nearest" });
  }
}

function showOptions(hits) {
  const list = $("search-results");
  list.replaceChildren();
  state.options = hits.filter((hit) => !state.favourites.has(hit.item_id));
  state.options.forEach((hit, i) => {
    const li = document.createElement("li");
    li.id = "option-" + i; li.setAttribute("role", "option"); li.setAttribute("aria-selected", "false");
    li.textContent = hit.name;
    li.addEventListener("mousedown", (event) => { event.preventDefault(); pick(i); });
    list.appendChild(li);
  });
  list.hidden = state.options.length === 0;
  $("artist-search").setAttribute("aria-expanded", String(!list.hidden));
  highlight(-1);  // the combobox pattern: no option is active until Arrow Down
}

async function search(query) {
  if (!query.trim()) { closeOptions(); return; }
  try {
    const data = await call("GET", "/search?limit=8&q=" + encodeURIComponent(query.trim()));
    if ($("artist-search").value === query) { state.searched = query; showOptions(data.items); }
  } catch (err) { setStatus("Search failed: " + err.message); }
}

// Enter on typed text: the active option, else the best match (searched now if the answer is not in yet).
async function pickBest() {
  const query = $("artist-search").value;
  if (!query.trim()) return;
  if (!state.options.length || state.searched !== query) {
    clearTimeout(state.timer);
    await search(query);
  }
  if (state.options.length) pick(0); else setStatus(`No match for "${query.trim()}".`);
}

function pick(index) {
  const hit = state.options[index];
  if (!hit) return;
  state.favourites.set(hit.item_id, hit.name);
  $("artist-search").value = "";
  closeOptions();
  renderFavourites();
  $("artist-search").focus();
}

function renderFavourites() {
  const list = $("favourites");
  list.replaceChildren();
  for (const [id, name] of state.favourites) {
    const li = document.createElement("li");
    li.textContent = name;
    const remove = document.createElement("button");
    remove.type = "button"; remove.textContent = "×"; remove.setAttribute("aria-label", "Remove " + name);
    remove.addEventListener("click", () => { state.favourites.delete(id); renderFavourites(); });
    li.appendChild(remove);
    list.appendChild(li);
  }
  $("recommend-button").disabled = state.favourites.size === 0;
}

async function recommend() {
  if (state.favourites.size === 0) return;
  setStatus("Loading recommendations…");
  try {
    const data = await call("POST", "/recommend/new-listener", {
      favourites: [...state.favourites.keys()], k: 10, user_id: listenerId(), exclude: [...state.skipped],
    });
    renderRecommendations(data.items);
    state.modelVersion = data.model_version;  // sent with a rating, never shown: listeners need no model tags
    state.sessionEvents = data.session_events || 0;
    $("rating").hidden = data.items.length === 0;
    setStatus(data.items.length ? `${data.items.length} recommendations for you.${sessionNote()}`
      : "No recommendations yet.");
  } catch (err) { setStatus("Could not get recommendations: " + err.message); }
}

function feedbackButton(item, event, label) {
  const button = document.createElement("button");
  button.type = "button"; button.textContent = label;
  button.setAttribute("aria-label", label + " " + item.name);
  button.addEventListener("click", () => sendFeedback(item, event));
  return button;
}

function renderRecommendations(items) {
  const list = $("recommendations");
  list.replaceChildren();
  for (const item of items) {
    const li = document.createElement("li");
    li.dataset.itemId = item.item_id;
    const name = document.createElement("strong");
    name.textContent = item.name;
    const reason = document.createElement("span");
    reason.className = "reason"; reason.textContent = item.reason;
    li.append(
      name, " ", feedbackButton(item, "like", "Like"), " ", feedbackButton(item, "skip", "Skip"), " ",
      feedbackButton(item, "dislike", "Not for me"), reason,
    );
    list.appendChild(li);
  }
}

async function sendFeedback(item, event) {
  const record = {
    user_id: listenerId(), item_id: item.item_id, event, event_id: newId(), timestamp: new Date().toISOString(),
  };
  try {
    await call("POST", "/feedback", { events: [record] });
  } catch (err) { setStatus("Feedback not saved: " + err.message); return; }
  if (event === "like") state.favourites.set(item.item_id, item.name); else state.skipped.add(item.item_id);
  renderFavourites();
  await recommend();
  setStatus(CONFIRMATIONS[event](item.name) + sessionNote());
}

// The server adapts the list to what this listener did since the model was trained (their stored likes,
// plays, skips and dislikes, this visit or earlier ones), and says how many reactions counted.
function sessionNote() {
  const n = state.sessionEvents || 0;
  return n ? ` This list reacts to your last ${n} ${n === 1 ? "reaction" : "reactions"}.` : "";
}

// What each reaction did, said where the list's status is read (a screen reader announces it).
const CONFIRMATIONS = {
  like: (name) => `Liked ${name}: added to your favourites, and the list now follows it too.`,
  skip: (name) => `Skipped ${name}: the list moves away from it.`,
  dislike: (name) => `${name} will not be recommended to you again.`,
};

// "How good are these recommendations?": five buttons, one answer per list shown, never required.
const RATING_WORDS = ["poor", "fair", "good", "very good", "great"];
function renderRatingButtons() {
  const box = document.querySelector("#rating .rating-buttons");
  box.replaceChildren(...RATING_WORDS.map((word, i) => {
    const button = document.createElement("button");
    button.type = "button"; button.textContent = String(i + 1);
    button.setAttribute("aria-label", `Rate ${i + 1} of 5: ${word}`);
    button.addEventListener("click", () => sendRating(i + 1));
    return button;
  }));
}

async function sendRating(rating) {
  try {
    await call("POST", "/ratings", { user_id: listenerId(), rating, model_version: state.modelVersion || null });
    $("rating-status").textContent = `Thank you: you rated these ${rating} of 5.`;
  } catch (err) { $("rating-status").textContent = "Rating not saved: " + err.message; }
}

// What the page stored about this listener (their anonymous id's events), and erasing it.
const REACTIONS = { like: "Liked", skip: "Skipped", dislike: "Not for me", play: "Played" };
async function showMyData() {
  const list = $("my-data");
  try {
    const data = await call("GET", `/users/${encodeURIComponent(listenerId())}/feedback`);
    const lines = [
      ...data.events.map((e) => `${REACTIONS[e.event] || e.event}: ${e.name || "an item no longer in the catalogue"}, ${new Date(e.timestamp).toLocaleString()}`),
      ...data.ratings.map((r) => `rated a list ${r.rating} of 5, ${new Date(r.timestamp).toLocaleString()}`),
    ];
    list.replaceChildren(...lines.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
    $("my-data-status").textContent = lines.length
      ? `${lines.length} reactions are stored under the anonymous id this browser keeps for you.`
      : "Nothing is stored about you yet.";
  } catch (err) { $("my-data-status").textContent = "Could not read your data: " + err.message; }
}

async function eraseMyData() {
  if (!window.confirm("Erase every reaction stored about you? This cannot be undone.")) return;
  try {
    const data = await call("DELETE", `/users/${encodeURIComponent(listenerId())}/feedback`);
    localStorage.removeItem("recsys-listener");  // a fresh anonymous id from now on
    state.skipped.clear();
    $("my-data").replaceChildren();
    $("my-data-status").textContent = `Erased ${data.deleted} reactions; you now have a new anonymous id.`;
  } catch (err) { $("my-data-status").textContent = "Could not erase your data: " + err.message; }
}

function onKey(event) {
  const count = state.options.length;
  if (event.key === "ArrowDown" && count) { event.preventDefault(); highlight((state.active + 1) % count); }
  else if (event.key === "ArrowUp" && count) {
    event.preventDefault(); highlight(state.active <= 0 ? count - 1 : state.active - 1);
  }
  else if (event.key === "Enter" && state.active >= 0) { event.preventDefault(); pick(state.active); }
  else if (event.key === "Enter") { event.preventDefault(); pickBest(); }
  else if (event.key === "Escape" && !$("search-results").hidden) { event.preventDefault(); closeOptions(); }
}

$("artist-search").addEventListener("input", (event) => {
  clearTimeout(state.timer);
  const query = event.target.value;
  state.timer = setTimeout(() => search(query), 120);
});
$("artist-search").addEventListener("keydown", onKey);
$("artist-search").addEventListener("blur", () => setTimeout(closeOptions, 150));
$("recommend-button").addEventListener("click", recommend);
$("show-data-button").addEventListener("click", showMyData);
renderRatingButtons();
$("erase-data-button").addEventListener("click", eraseMyData);

// The same page serves either catalogue: the champion says whether its items are artists or songs.
const WORDS = {
  artist: { one: "artist", many: "artists", hint: "Type an artist name, then Arrow keys and Enter" },
  track: { one: "song", many: "songs", hint: "Type a song title or an artist, then Arrow keys and Enter" },
};

function useCatalogue(kind) {
  const words = WORDS[kind] || WORDS.artist;
  document.body.dataset.itemKind = kind in WORDS ? kind : "artist";
  document.querySelector("h1").textContent = `Find new ${words.many}`;
  $("pick-heading").textContent = `1. Pick your favourite ${words.many}`;
  document.querySelector("label[for=artist-search]").textContent = `Search ${words.many}`;
  $("artist-search").placeholder = words.hint;
  $("search-results").setAttribute("aria-label", `Matching ${words.many}`);
  $("favourites").setAttribute("aria-label", `Your favourite ${words.many}`);
  $("recommendations").setAttribute("aria-label", `Recommended ${words.many}`);
}

call("GET", "/model").then((info) => useCatalogue(info.item_kind)).catch(() => useCatalogue("artist"));
