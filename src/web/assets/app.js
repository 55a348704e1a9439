// meshrelay web app: a client of the node's /api/v1 (protocol-spec/web.md).
// Text from the network is only ever set with textContent, never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { rooms: [], room: null, names: new Map(), source: null, seen: new Set() };

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function banner(text) {
  const b = $("banner");
  b.textContent = text || "";
  b.hidden = !text;
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.headers["X-Meshrelay"] = "1";
    opts.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch("/api/v1" + path, opts);
  } catch (e) {
    banner("Connection to the node lost. Retrying…");
    throw new Error("the node is not reachable");
  }
  banner("");
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const msg = (data.error && data.error.message) || ("HTTP " + resp.status);
    if (resp.status === 503) banner("The node is not answering: " + msg);
    throw new Error(msg);
  }
  return data;
}

function showError(form, err) {
  let p = form.querySelector(".error");
  if (!p) { p = el("p", "error"); form.after(p); }
  p.textContent = err ? String(err.message || err) : "";
  if (!err) p.remove();
}

function shortId(id) { return id.length > 12 ? id.slice(0, 10) + "…" : id; }
function who(id) { return state.names.get(id) || shortId(id); }
function time(ts) {
  const d = new Date(ts);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : d.toLocaleString();
}

function show(view) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === view || (view === "room" && a.dataset.nav === "rooms"));
}

async function loadRooms() {
  const data = await api("GET", "/rooms");
  state.rooms = data.rooms || [];
  const list = $("room-list");
  list.replaceChildren();
  for (const r of state.rooms) {
    const li = el("li");
    const a = el("a");
    a.href = "#/room/" + encodeURIComponent(r.room_id);
    a.append(el("div", "name", r.name || "(unnamed room)"));
    const meta = el("div", "muted small", r.members.length + (r.members.length === 1 ? " member" : " members"));
    const badge = el("span", "badge");
    badge.hidden = true;
    meta.append(badge);
    a.append(meta);
    li.append(a);
    list.append(li);
    unread(r.room_id).then((n) => {
      if (n > 0) { badge.textContent = (n > UNREAD_WINDOW ? UNREAD_WINDOW + "+" : n) + " new"; badge.hidden = false; }
    }).catch(() => {});
  }
  $("rooms-empty").hidden = state.rooms.length > 0;
}

// Unread: readable messages after the last one this browser showed in the
// room (remembered in localStorage), counted over the room's last
// UNREAD_WINDOW messages.
const UNREAD_WINDOW = 50;
const MAX_FILE_BYTES = 1024 * 1024;
const seenKey = (roomId) => "meshrelay.seen." + roomId;
async function unread(roomId) {
  const data = await api("GET", "/rooms/" + encodeURIComponent(roomId) + "/messages?read=0&last=" + UNREAD_WINDOW);
  const texts = (data.lines || []).filter((l) => l.text !== undefined);
  const seen = localStorage.getItem(seenKey(roomId));
  const at = seen ? texts.findIndex((l) => l.event_id === seen) : -1;
  if (at >= 0) return texts.length - at - 1;
  return seen && texts.length >= UNREAD_WINDOW ? UNREAD_WINDOW + 1 : texts.length;
}

function lineItem(line) {
  const li = el("li");
  if (line.gap) {
    const g = line.gap;
    li.append(el("span", "note warn", `Missing: messages ${g.from_seq}–${g.to_seq} from ${who(g.sender)} have not arrived yet.`));
    return li;
  }
  if (line.fork) {
    li.append(el("span", "note warn", `${who(line.fork.sender)} sent ${line.fork.event_ids.length} different messages as number ${line.fork.seq}.`));
    return li;
  }
  const meta = el("div", "meta");
  // Urgent (protocol-spec/app.md §4): marked before everything else.
  if (line.urgent) {
    li.classList.add("urgent");
    meta.append(el("span", "urgent-tag", "🚨 URGENT"));
  }
  // A message a bridge brought from Matrix: its Matrix author, then the
  // bridge device that vouches for it (protocol-spec/bridge.md §5).
  const author = line.via
    ? `${line.via.name || line.via.matrix_user} (${line.via.matrix_user} via ${who(line.sender)})`
    : who(line.sender);
  meta.append(el("span", "who", author));
  meta.append(el("time", "", time(line.ts)));
  const t = ticks(line);
  if (t) meta.append(el("span", "ticks", t));
  li.append(meta);
  if (line.location) {
    // A location pin: the coordinates, and a map link for when a network
    // is reachable (nothing is fetched offline).
    const { lat, lon, accuracy_m } = line.location;
    const pin = el("div", "text location");
    const a = el("a", "", `📍 ${lat.toFixed(5)}, ${lon.toFixed(5)}` + (accuracy_m ? ` ±${accuracy_m} m` : ""));
    a.href = `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=16/${lat}/${lon}`;
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    pin.append(a);
    li.append(pin);
    if (line.text) li.append(el("div", "text", line.text));
  } else if (line.text !== undefined) {
    // A file's caption may be empty.
    if (line.text || !line.attachment) li.append(el("div", "text", line.text));
    if (line.attachment) li.append(fileItem(line));
  } else if (line.unauthorized) li.append(el("div", "note warn", "From a removed member: not shown."));
  else li.append(el("div", "note", "Cannot be read: " + (line.reason || "unknown reason")));
  li.dataset.id = line.event_id || "";
  return li;
}

// A file (protocol-spec/attachments.md): its name and size, then, once
// every chunk arrived, a download link and, for an image, the picture.
function fileItem(line) {
  const a = line.attachment;
  const div = el("div", "file");
  const kb = Math.max(1, Math.round(a.size / 1024));
  if (!a.complete) {
    div.append(el("span", "note", `📎 ${a.name} (${kb} KB) is still arriving…`));
    return div;
  }
  const url = "/api/v1/files/" + encodeURIComponent(line.event_id);
  const link = el("a", "", `📎 ${a.name} (${kb} KB)`);
  link.href = url;
  link.download = a.name;
  div.append(link);
  if (/^image\/(jpeg|png|gif|webp)$/.test(a.media_type)) {
    const img = el("img");
    img.src = url;
    img.alt = a.name;
    img.loading = "lazy";
    div.append(img);
  }
  return div;
}

// An image made smaller for the mesh: the longest side at most 1024 px,
// JPEG at quality 0.8 (typical photos end up well under 150 KB).
async function downscale(file) {
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, 1024 / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const blob = await new Promise((ok) => canvas.toBlob(ok, "image/jpeg", 0.8));
  const name = file.name.replace(/\.[^.]*$/, "") + ".jpg";
  return { blob, name, type: "image/jpeg" };
}

// A file as the API takes it: {"name","media_type","data"} (base64).
async function fileBody(file, original) {
  let blob = file, name = file.name, type = file.type || "application/octet-stream";
  if (!original && /^image\/(jpeg|png|webp)$/.test(type)) ({ blob, name, type } = await downscale(file));
  if (blob.size > MAX_FILE_BYTES) throw new Error(`The file is ${Math.round(blob.size / 1024)} KB; at most 1 MiB can be sent.`);
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return { name, media_type: type, data: btoa(bin) };
}

// Receipt marks of an own message (as the CLI shows them): ✓ the next hop
// (a peer or the homeserver) or another member holds it, ✓✓ every member
// does, then who read it.
function ticks(line) {
  const myId = state.me && state.me.device_id;
  if (line.text === undefined || !myId || line.sender !== myId) return "";
  const others = [...state.names.keys()].filter((d) => d !== myId).length;
  const got = (line.delivered_to || []).length;
  const read = line.read_by || [];
  let t = others > 0 && got >= others ? "✓✓" : got > 0 || line.next_hop ? "✓" : "";
  if (read.length > 0) {
    const names = read.map((d) => who(d)).join(", ");
    t += (t ? " " : "") + (others > 0 && read.length >= others ? "read by all" : "read by " + names);
  }
  return t;
}

function follow(roomId) {
  if (state.source) state.source.close();
  state.seen = new Set();
  $("lines").replaceChildren();
  const src = new EventSource("/api/v1/rooms/" + encodeURIComponent(roomId) + "/events");
  state.source = src;
  src.addEventListener("line", (ev) => {
    if (state.seen.has(ev.data)) return;
    state.seen.add(ev.data);
    let line;
    try { line = JSON.parse(ev.data); } catch (e) { return; }
    const list = $("lines");
    const atEnd = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    // A line again with new receipts replaces the one shown.
    const shown = line.event_id && line.text !== undefined
      ? [...list.children].find((li) => li.dataset.id === line.event_id) : null;
    if (shown) { shown.replaceWith(lineItem(line)); return; }
    list.append(lineItem(line));
    if (line.text !== undefined && line.event_id) localStorage.setItem(seenKey(roomId), line.event_id);
    if (atEnd) window.scrollTo(0, document.body.scrollHeight);
  });
  src.onerror = () => banner("Connection to the node lost. Reconnecting…");
  src.onopen = () => banner("");
}

async function openRoom(roomId) {
  show("room");
  if (!state.rooms.some((r) => r.room_id === roomId)) await loadRooms().catch(() => {});
  const room = state.rooms.find((r) => r.room_id === roomId);
  state.room = roomId;
  state.names = new Map((room ? room.members : []).map((m) => [m.device_id, m.name || shortId(m.device_id)]));
  $("room-title").textContent = room ? (room.name || "(unnamed room)") : shortId(roomId);
  $("room-members").textContent = room ? room.members.map((m) => (m.name || shortId(m.device_id)) + (m.admin ? " (admin)" : "")).join(", ") : "";
  if (!state.me) state.me = await api("GET", "/me").catch(() => null);
  await showMembers(room);
  showInviteContacts(room);
  follow(roomId);
}

// The members, with an admin's actions on each (the daemon checks the
// room's rules; a refused action shows its reason).
async function showMembers(room) {
  const list = $("member-list");
  list.replaceChildren();
  if (!room) return;
  if (!state.me) state.me = await api("GET", "/me").catch(() => null);
  const myId = state.me && state.me.device_id;
  const iAmAdmin = room.members.some((m) => m.device_id === myId && m.admin);
  for (const m of room.members) {
    const li = el("li");
    li.append(el("span", "name", (m.name || shortId(m.device_id)) + (m.device_id === myId ? " (you)" : "") + (m.admin ? " · admin" : "")));
    if (iAmAdmin && m.device_id !== myId) {
      const act = (label, action, cls, confirmText) => {
        const b = el("button", "small " + cls, label);
        b.type = "button";
        b.addEventListener("click", async () => {
          if (confirmText && !window.confirm(confirmText)) return;
          try {
            await api("POST", `/rooms/${encodeURIComponent(room.room_id)}/members/${encodeURIComponent(m.device_id)}/${action}`, {});
            await loadRooms();
            await openRoom(room.room_id);
          } catch (e) { banner(String(e.message || e)); }
        });
        li.append(b);
      };
      act(m.admin ? "Demote" : "Make admin", m.admin ? "demote" : "promote", "secondary", null);
      act("Remove", "remove", "danger", `Remove ${m.name || shortId(m.device_id)} from the room? Their later messages will not be shown.`);
    }
    list.append(li);
  }
}

async function loadContacts() {
  const data = await api("GET", "/contacts");
  state.contacts = data.contacts || [];
  return state.contacts;
}

async function showContacts() {
  const list = $("contact-list");
  list.replaceChildren();
  for (const c of await loadContacts()) {
    const li = el("li", "contact");
    li.append(el("div", "name", c.name || "(no name)"));
    li.append(el("div", "fp", c.fingerprint));
    list.append(li);
  }
  $("contacts-empty").hidden = state.contacts.length > 0;
}

// One-tap invites of stored contacts who are not members yet.
async function showInviteContacts(room) {
  const box = $("invite-contacts");
  box.replaceChildren();
  if (!room) return;
  const members = new Set(room.members.map((m) => m.device_id));
  for (const c of await loadContacts().catch(() => [])) {
    if (members.has(c.device_id)) continue;
    const b = el("button", "small secondary", "Invite " + (c.name || shortId(c.device_id)));
    b.type = "button";
    b.title = "Fingerprint " + c.fingerprint;
    b.addEventListener("click", async () => {
      try {
        await api("POST", "/rooms/" + encodeURIComponent(room.room_id) + "/invite", { contact: c.device_id });
        await loadRooms();
        await openRoom(room.room_id);
      } catch (e) { banner(String(e.message || e)); }
    });
    box.append(b);
  }
}

async function loadMe() {
  showContacts().catch((e) => banner(String(e.message || e)));
  const me = await api("GET", "/me");
  $("me-name").textContent = me.name;
  $("me-device").textContent = me.device_id;
  $("me-fingerprint").textContent = me.fingerprint;
  $("me-card").value = me.card;
  $("me-qr").src = "/api/v1/me/qr.svg";
}

function fact(dl, k, v) { dl.append(el("dt", "", k)); dl.append(el("dd", "", String(v))); }

async function loadNode() {
  const [st, pe] = await Promise.all([api("GET", "/status"), api("GET", "/peers")]);
  const s = st.status || {};
  const dl = $("status");
  dl.replaceChildren();
  if (s.store) fact(dl, "Events held", s.store.events !== undefined ? s.store.events : JSON.stringify(s.store));
  if (s.disk && s.disk.level) fact(dl, "Disk", s.disk.level);
  fact(dl, "Links", s.peers !== undefined ? s.peers : (pe.peers || []).length);
  if (s.ble !== undefined) fact(dl, "Bluetooth", typeof s.ble === "string" ? s.ble : (s.ble.state || JSON.stringify(s.ble)));
  if (s.homeserver !== undefined) fact(dl, "Homeserver", typeof s.homeserver === "string" ? s.homeserver : (s.homeserver.state || JSON.stringify(s.homeserver)));
  const rows = $("peer-rows");
  rows.replaceChildren();
  for (const p of pe.peers || []) {
    const tr = el("tr");
    for (const v of [p.kind, p.address || "—", p.since ? time(p.since) : "—", bytes(p.bytes_in), bytes(p.bytes_out)]) tr.append(el("td", "", v));
    rows.append(tr);
  }
  $("peers-empty").hidden = (pe.peers || []).length > 0;
}

function bytes(n) {
  if (n === undefined) return "—";
  if (n < 1024) return n + " B";
  if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1048576).toFixed(1) + " MiB";
}

async function route() {
  const h = location.hash || "#/rooms";
  if (!h.startsWith("#/room/") && state.source) { state.source.close(); state.source = null; }
  try {
    if (h.startsWith("#/room/")) await openRoom(decodeURIComponent(h.slice(7)));
    else if (h === "#/me") { show("me"); await loadMe(); }
    else if (h === "#/peers") { show("peers"); await loadNode(); }
    else { show("rooms"); await loadRooms(); }
  } catch (e) {
    banner(String(e.message || e));
  }
}

function wire() {
  $("room-create").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    try {
      const r = await api("POST", "/rooms", { name: $("room-name").value });
      showError(f, null);
      $("room-name").value = "";
      await loadRooms();
      location.hash = "#/room/" + encodeURIComponent(r.room_id);
    } catch (e) { showError(f, e); }
  });
  $("composer").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    const text = $("text").value;
    const pin = $("pin").value.trim();
    const picked = $("file").files[0];
    if ((!text.trim() && !pin && !picked) || !state.room) return;
    const body = { text, urgent: $("urgent").checked };
    if (picked) {
      try { body.file = await fileBody(picked, $("original").checked); } catch (e) { showError(f, e); return; }
    }
    if (pin) {
      const m = pin.match(/^\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*(?:±\s*(\d+))?\s*$/);
      if (!m) { showError(f, new Error("Location: LAT,LON in decimal degrees, e.g. 52.5200,13.4050")); return; }
      body.location = { lat: Number(m[1]), lon: Number(m[2]) };
      if (m[3]) body.location.accuracy_m = Number(m[3]);
    }
    const b = f.querySelector("button[type=submit]");
    b.disabled = true;
    try {
      await api("POST", "/rooms/" + encodeURIComponent(state.room) + "/messages", body);
      $("text").value = "";
      $("pin").value = "";
      $("file").value = "";
      $("urgent").checked = false;
      showError(f, null);
    } catch (e) { showError(f, e); }
    b.disabled = false;
  });
  // "Here" fills the pin from the device's position where the browser
  // offers it (a secure context: the laptop itself on loopback).
  if (navigator.geolocation && window.isSecureContext) {
    $("locate").hidden = false;
    $("locate").addEventListener("click", () => {
      navigator.geolocation.getCurrentPosition(
        (p) => { $("pin").value = `${p.coords.latitude.toFixed(6)},${p.coords.longitude.toFixed(6)} ±${Math.round(p.coords.accuracy)}`; },
        (e) => showError($("composer"), new Error("Position unavailable: " + e.message)),
        { enableHighAccuracy: true, timeout: 15000 });
    });
  }
  $("text").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); $("composer").requestSubmit(); }
  });
  $("invite").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    try {
      await api("POST", "/rooms/" + encodeURIComponent(state.room) + "/invite", { contact: $("card").value });
      $("card").value = "";
      $("card-who").hidden = true;
      showError(f, null);
      await loadRooms();
      await openRoom(state.room);
    } catch (e) { showError(f, e); }
  });
  // Who a pasted card names, and the fingerprint to compare in person.
  $("card").addEventListener("input", async () => {
    const who = $("card-who");
    const card = $("card").value.trim();
    if (!card) { who.hidden = true; return; }
    try {
      const c = await api("POST", "/cards/check", { card });
      who.className = "small";
      who.textContent = `${c.name || "(no name)"}, fingerprint ${c.fingerprint}. Compare it with theirs in person before inviting.`;
    } catch (e) {
      who.className = "small error";
      who.textContent = String(e.message || e);
    }
    who.hidden = false;
  });
  $("contact-add").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = ev.target;
    try {
      const c = await api("POST", "/contacts", { card: $("contact-card").value });
      $("contact-card").value = "";
      showError(f, null);
      const p = el("p", "small", `${c.name || "(no name)"} ${c.outcome}: fingerprint ${c.fingerprint}.`);
      f.after(p);
      setTimeout(() => p.remove(), 8000);
      await showContacts();
    } catch (e) { showError(f, e); }
  });
  $("leave").addEventListener("click", async () => {
    if (!state.room || !window.confirm("Leave this room? You will no longer receive its messages.")) return;
    try {
      await api("POST", "/rooms/" + encodeURIComponent(state.room) + "/leave", {});
      location.hash = "#/rooms";
    } catch (e) { banner(String(e.message || e)); }
  });
  window.addEventListener("hashchange", route);
}

wire();
route();
