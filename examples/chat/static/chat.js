// The chat page: a nickname form, then rooms, messages and who is here.
// eventbus.js is the browser client; config.js says where the bus listens.
import { connect } from "./eventbus.js";
import { BUS_URL } from "./config.js";

const $ = (id) => document.getElementById(id);
const state = { bus: null, nick: "", room: "", members: new Set() };
window.chat = state; // for tests and curious people

const COLORS = ["#4f6df5", "#e0575b", "#2fa67a", "#c4830f", "#8a5cf5", "#1c9bb8", "#d94f9a"];
function avatar(nick, className = "avatar") {
  const el = document.createElement("span");
  el.className = className;
  let hash = 0;
  for (const ch of nick) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  el.style.background = COLORS[hash % COLORS.length];
  el.textContent = nick.slice(0, 1);
  return el;
}

function time(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function scrollDown() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

function showMessage(message) {
  const li = document.createElement("li");
  li.className = "message";
  li.dataset.nick = message.nick;
  li.dataset.ts = message.ts;
  if (message.nick === state.nick) li.classList.add("mine");
  if (message.nick === "bot") li.classList.add("bot");
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = message.text;
  // Consecutive messages of one person within five minutes share a header.
  const last = $("messages").lastElementChild;
  if (last?.dataset.nick === message.nick && message.ts - Number(last.dataset.ts) < 300) {
    li.classList.add("more");
    li.append(text);
  } else {
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = message.nick;
    if (message.nick === "bot") {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "bot";
      who.append(badge);
    }
    const when = document.createElement("time");
    when.textContent = time(message.ts);
    who.append(when);
    li.append(avatar(message.nick), who, text);
  }
  $("messages").append(li);
  scrollDown();
}

function showNotice(text) {
  const li = document.createElement("li");
  li.className = "notice";
  li.textContent = text;
  $("messages").append(li);
  scrollDown();
}

function showMembers() {
  const list = $("members");
  list.replaceChildren(...[...state.members].sort().map((nick) => {
    const li = document.createElement("li");
    li.append(avatar(nick), nick === state.nick ? `${nick} (you)` : nick);
    return li;
  }));
  const n = state.members.size;
  $("room-info").textContent = `${n} ${n === 1 ? "person" : "people"} here`;
}

function showRooms(rooms) {
  $("rooms").replaceChildren(...rooms.map(({ name, members }) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = name === state.room ? "current" : "";
    const label = document.createElement("span");
    label.textContent = `# ${name}`;
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = members;
    button.append(label, count);
    button.onclick = () => enter(name);
    li.append(button);
    return li;
  }));
}

function setStatus(text, online) {
  $("status").textContent = text;
  $("status").classList.toggle("online", online);
}

async function enter(room) {
  const joined = await state.bus.call("chat.join", { room });
  state.room = joined.room;
  state.members = new Set(joined.members);
  $("room-title").textContent = `# ${room}`;
  $("text").placeholder = `Message #${room}`;
  $("messages").replaceChildren();
  for (const message of joined.history) showMessage(message);
  showNotice(`You joined #${room}`);
  showMembers();
  showRooms(await state.bus.call("chat.rooms"));
  $("text").focus();
}

async function start(nick, room) {
  state.nick = nick;
  $("login").hidden = true;
  $("app").hidden = false;
  $("me-nick").textContent = nick;
  $("me-avatar").replaceWith(Object.assign(avatar(nick), { id: "me-avatar" }));

  const bus = connect(`${BUS_URL}?nick=${encodeURIComponent(nick)}`, {
    ondisconnect: ({ reconnect }) => setStatus(reconnect ? "reconnecting…" : "offline", false),
    // The bus keeps rooms on the server side: join again after a reconnect.
    onreconnect: () => { setStatus("online", true); enter(state.room); },
    onerror: (error) => showNotice(`error: ${error.message}`),
  });
  state.bus = bus;
  bus.on("message", (message) => showMessage(message));
  bus.on("presence", ({ nick: who, room: where, action }) => {
    if (where !== state.room) return;
    if (action === "joined") state.members.add(who);
    else state.members.delete(who);
    showNotice(`${who} ${action} #${where}`);
    showMembers();
  });
  bus.on("rooms", (rooms) => showRooms(rooms));
  await bus.ready;
  setStatus("online", true);
  await enter(room);
  state.ready = true;
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  start($("nick").value.trim(), $("room").value).catch((error) => {
    $("login-error").textContent = `Could not connect: ${error.message}`;
    $("login-error").hidden = false;
    $("login").hidden = false;
    $("app").hidden = true;
  });
});

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  try {
    showMessage(await state.bus.call("chat.say", { text })); // shown once the bus acked it
  } catch (error) {
    showNotice(`not sent (${error.code}): ${error.message}`);
    input.value = text;
  }
});

// ?nick=ada&room=python skips the form.
const params = new URLSearchParams(location.search);
if (params.get("nick")) {
  $("nick").value = params.get("nick");
  if (params.get("room")) $("room").value = params.get("room");
  $("login-form").requestSubmit();
}
