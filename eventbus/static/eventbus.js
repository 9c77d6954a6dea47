/**
 * eventbus.js: the browser client of the eventbus protocol v1 (protocol/PROTOCOL.md).
 *
 * A dependency-free ES module over the browser's own WebSocket. The eventbus server
 * serves it at `GET /eventbus.js`; serve a copy with your pages, or import it from the
 * eventbus server when the page has the same origin (module imports are CORS requests,
 * and that answer carries no Access-Control-Allow-Origin header).
 *
 *   import { connect } from "/eventbus.js";
 *   const bus = connect("ws://localhost:8765/", {     // connect(): the server it came from
 *     onreconnect({ rooms }) {                       // after a reconnect: what was lost?
 *       for (const [room, verdict] of Object.entries(rooms)) {
 *         if (!verdict.recovered) refetch(room);     // your app's own state, fetched again
 *       }
 *     },
 *   });
 *   bus.on("chat", (data, meta) => console.log(meta.room, data));
 *   await bus.ready;                                 // resolves after WELCOME
 *   await bus.join("lobby");                         // -> [epoch, seq]
 *   await bus.publish("lobby", "chat", { text: "hi" });   // -> [epoch, seq] or null
 *   const answer = await bus.call("profile.get", { user: "ada" }, { timeout: 5000 });
 *
 * connect(url?, options?) -> Client. `url` defaults to the server this script came
 * from. Options:
 *   codec      "json" (default) or "msgpack"; offered as subprotocol
 *              eventbus.v1.json / eventbus.v1.msgpack (only the chosen one).
 *   msgpack    { encode, decode }, e.g. from @msgpack/msgpack; required for "msgpack"
 *              (giving it makes "msgpack" the default). Binary data is sent as a
 *              Uint8Array and arrives as one. JSON connections cannot carry binary data:
 *              sending it (or NaN/Infinity) throws a TypeError locally.
 *   reconnect  true (default: { initial: 500, factor: 2, cap: 30000 } ms), false, or
 *              { initial, factor, cap }: exponential backoff with full jitter, i.e. a
 *              random wait in [0, min(cap, initial * factor ** attempt)]; the attempt
 *              count resets once a connection has stayed up for 10 s.
 *   timeout    default request timeout in ms (10000); 0 means none.
 *   onwelcome, onreconnect, ondisconnect, onerror, ongap: the hooks below.
 *   WebSocket  a WebSocket class to use instead of globalThis.WebSocket.
 *
 * Client:
 *   ready                    promise of the client, resolved on the first WELCOME; rejected
 *                            if the client closes for good before that.
 *   sid, options, protocol   from the current connection's WELCOME (options: server limits).
 *   connected, closed        booleans; connected: the current connection got its WELCOME
 *                            (after a reconnect, requests still wait for the RESUME's answer).
 *   rooms                    Map room -> the last position [epoch, seq] seen in it
 *                            (PROTOCOL.md section 8): from the JOIN ACK, then its room events
 *                            and the verdicts of a RESUME; not from the ACKs of this client's
 *                            own publishes (with several servers such an ACK may come before
 *                            an earlier message of the room, which would then look like a
 *                            repeat). Within an epoch only a higher seq replaces it; a new
 *                            epoch replaces it. A room event whose seq is not above the one
 *                            kept for its epoch is a repeat: it is dropped, never given to a
 *                            handler.
 *   emit(event, data)        fire and forget; an error comes back through onerror. Throws
 *                            if the data cannot be encoded or the client is closed.
 *   call(event, data, {timeout}) -> promise of the server handler's answer.
 *   join(room) -> position, leave(room) -> null.
 *   publish(room, event, data) -> position; sent with a publish id, so that a reconnect
 *                            can send it again safely (Publishes, below).
 *   on(event, handler)       one handler per event name, for direct events and room events
 *                            alike: handler(data, meta), meta = { event, room: null } or
 *                            { event, room, epoch, seq }. For a server call (an event with
 *                            an ack id) its return value, or awaited promise, is the answer;
 *                            a thrown error answers with its `code` (if it is a valid code)
 *                            or internal_error; no handler answers unknown_event.
 *   off(event), close()      close() stops for good (close code 1000, no reconnect).
 *
 * Requests return promises that reject with an EventBusError whose `code` is the
 * server's error code, or "timeout", or "disconnected". Requests on the wire when the
 * connection drops fail at once with "disconnected" (nothing is retried), except
 * publishes (below). Requests made while the client is not connected wait in a queue,
 * in order, and go out right after the next WELCOME, or after a reconnect right after
 * the RESUME's answer (their timeout runs meanwhile).
 *
 * Hooks (assign them or pass them as options):
 *   onwelcome({ sid, options })                 every WELCOME.
 *   ondisconnect({ code, reason, reconnect })   every close; reconnect: whether it will.
 *   onreconnect({ sid, resumed, rooms })        after a reconnect, once the client's rooms
 *       are back and what they missed was replayed (through the handlers, as room events).
 *       resumed: whether the server resumed the session. rooms: { room: verdict } for
 *       each room the client was in, the verdict being one of:
 *         { recovered: true, replayed, position }   every message missed in the room was
 *                                                   replayed (`replayed` of them)
 *         { recovered: false, reason, position }    back in the room at `position`, but
 *                                                   what it missed is lost: refetch it
 *         { recovered: false, reason }              not back in the room, and dropped from
 *                                                   `rooms` (reason forbidden, too_many_rooms)
 *         { recovered: false, reason, error }       the JOIN to get back in failed with
 *                                                   `error` (its code); dropped from `rooms`
 *                                                   unless it was "disconnected" or "timeout"
 *       reason is the server's (PROTOCOL.md section 9.2: history_off, epoch_changed,
 *       window_exceeded, too_far_behind, forbidden, too_many_rooms, unavailable; take
 *       any other as not recovered too), or "resume_failed": the server refused the
 *       RESUME as a whole. A room the server did not join again (unavailable) is joined
 *       with JOIN. A connection that drops first gets no onreconnect: the next one
 *       resumes from the positions reached, and reports.
 *   onerror(err)   an ERROR without ack id (e.g. `unencodable`, or a failed emit).
 *   ongap({ room, count })   `count` messages for `room` (null: direct events) were dropped.
 *   Without onerror / ongap, those are logged with console.warn.
 *
 * Reconnecting, with the backoff above, happens after every close (PROTOCOL.md section
 * 14) except 1000 (the server's application closed on purpose), 1002, 1007, 1009 and
 * 4000 (this client broke the protocol: a new connection would break it again, in a
 * loop), 4003 (authorization revoked: get new credentials first) and 4004 (the session
 * lives on in another connection). After those, as after close(), the client is closed
 * for good: ondisconnect gets reconnect: false and requests reject with "disconnected".
 * The Python client stops after the same codes.
 *
 * Resuming (PROTOCOL.md section 9). The client keeps its connection's sid and the last
 * resume token it got: the WELCOME's, then that of each `$resume_token` event (handled
 * here, never given to a handler). After a reconnect its first request is RESUME, with
 * an ack id and no timeout, naming the previous connection's sid and token and the
 * position of each room in `rooms`. The server replays, room by room, the messages
 * after those positions, then answers with each room's verdict: onreconnect reports
 * them. If the server refuses the RESUME (resume_failed: the token expired, or the
 * server forgot the session), the client joins its rooms again with JOIN, in a new
 * session, and reports each as not recovered with reason "resume_failed". Either way
 * the requests queued meanwhile go out after that (after the JOINs it sends). The token
 * is secret: it is never logged, and is forgotten when the client closes for good.
 *
 * Publishes. Each publish() carries a publish id (1, 2, 3, ... over the client's life,
 * never reused). One whose connection drops before its answer does not fail: it is held
 * and, once the RESUME succeeded, sent again with the same publish id (and its answer is
 * its promise's); the server applies it once, and answers a repeat with the first's
 * position, as long as the first is still in the room's history (by default the last
 * 1,000 messages of 2 minutes: PROTOCOL.md sections 6.6, 9.3). Publishes made while the
 * client is disconnected are held too, and sent after the RESUME. A held publish that
 * was on the wire fails with "disconnected" (it may have been applied) instead of being
 * sent again where it could be applied twice: after a refused RESUME (a new session,
 * which does not know its publish id), or to a room whose verdict says it was not
 * recovered (history_off: a room without history ignores publish ids; window_exceeded
 * and the like: the first may have left the history; to a room it is not in, the client
 * cannot tell). At most 1,000 publishes are held at once: beyond, one on the wire fails with
 * "disconnected", and a new one is rejected at once with "disconnected". Their timeouts
 * run meanwhile, and one that timed out is never sent again.
 *
 * Reconnecting also covers refused handshakes (401, 403): a browser reports them as a
 * plain failed connection (1006), with no status to tell them apart.
 *
 * No heartbeat watchdog (PROTOCOL.md section 11 asks clients for one): the browser
 * answers the server's pings itself and hides them from JavaScript, so "nothing received
 * for ping_interval + ping_timeout" would also fire on a healthy connection that is
 * merely quiet. The cost: a network path that dies silently is noticed only when the
 * browser's TCP stack gives up on it (it then fires close, and the client reconnects),
 * not after 45 s.
 */

const WELCOME = 0, EMIT = 1, EVENT = 2, ROOM_EVENT = 3, JOIN = 4, LEAVE = 5, PUBLISH = 6;
const ACK = 7, ERROR = 8, GAP = 9, RESUME = 10;
const MAX_ACK_ID = 2 ** 31 - 1;
const CODE = /^[a-z][a-z0-9_]{0,63}$/;
const SUBPROTOCOL = { json: "eventbus.v1.json", msgpack: "eventbus.v1.msgpack" };
// The close codes after which the client stops instead of reconnecting (see the top of
// this file); the Python client's NO_RECONNECT_CLOSE_CODES holds the same ones.
const FINAL_CLOSE_CODES = new Set([1000, 1002, 1007, 1009, 4000, 4003, 4004]);
const STABLE_MS = 10000;
// Publishes held for the next connection at most (see Publishes at the top).
const MAX_HELD_PUBLISHES = 1000;
// Verdicts after which the connection is not in the room, and a JOIN would be refused.
const NOT_JOINED = new Set(["forbidden", "too_many_rooms"]);

/** An error with a wire code (or "timeout" / "disconnected"). */
export class EventBusError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = "EventBusError";
    this.code = code;
  }
}

/** Open a client; see the top of this file. */
export function connect(url, options = {}) {
  return new Client(url, options);
}

function defaultUrl() {
  const url = new URL("/", import.meta.url);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function noBinaryOrNonFinite(key, value) {
  if (typeof value === "number" && !Number.isFinite(value)) {
    throw new TypeError(`${value} cannot be sent: only finite numbers are allowed`);
  }
  if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
    throw new TypeError("binary data cannot be sent over JSON: use the msgpack codec");
  }
  return value;
}

function isPosition(value) {
  return Array.isArray(value) && value.length === 2 && typeof value[0] === "string"
    && Number.isInteger(value[1]);
}

/** A RESUME verdict as the page sees it: the server's, or "unavailable" if unreadable. */
function verdictOf(answer, room) {
  const found = answer !== null && typeof answer === "object" && Object.hasOwn(answer, room)
    ? answer[room] : null;
  if (found === null || typeof found !== "object" || typeof found.recovered !== "boolean") {
    return { recovered: false, reason: "unavailable" };
  }
  const verdict = { ...found };
  if (!isPosition(verdict.position)) delete verdict.position;
  return verdict;
}

function report(error) {
  (globalThis.reportError ?? console.error)(error);
}

export class Client {
  constructor(url, options = {}) {
    this.url = url ?? defaultUrl();
    const { msgpack } = options;
    this.codec = options.codec ?? (msgpack ? "msgpack" : "json");
    if (this.codec === "msgpack") {
      if (typeof msgpack?.encode !== "function" || typeof msgpack?.decode !== "function") {
        throw new TypeError('codec "msgpack" needs options.msgpack = { encode, decode }');
      }
      this._encode = (packet) => msgpack.encode(packet);
      this._decode = (raw) => {
        if (!(raw instanceof ArrayBuffer)) throw new TypeError("text frame on msgpack");
        return msgpack.decode(new Uint8Array(raw));
      };
    } else if (this.codec === "json") {
      this._encode = (packet) => JSON.stringify(packet, noBinaryOrNonFinite);
      this._decode = (raw) => {
        if (typeof raw !== "string") throw new TypeError("binary frame on JSON");
        return JSON.parse(raw);
      };
    } else {
      throw new TypeError(`unknown codec ${JSON.stringify(this.codec)}`);
    }
    const reconnect = options.reconnect ?? true;
    this._backoff = reconnect === false ? null : {
      initial: 500, factor: 2, cap: 30000, ...(reconnect === true ? {} : reconnect),
    };
    this.timeout = options.timeout ?? 10000;
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    for (const hook of ["onwelcome", "onreconnect", "ondisconnect", "onerror", "ongap"]) {
      this[hook] = options[hook] ?? null;
    }
    this.sid = null;
    this.options = null;
    this.protocol = null;
    this.connected = false;
    this.closed = false;
    this.rooms = new Map();
    this._ahead = new Map(); // room -> position of a ROOM_EVENT for a room not in `rooms`
    // Secrets (PROTOCOL.md section 16). _resumeToken: the current connection's latest;
    // _session: { sid, token } of the session the next RESUME names.
    this._resumeToken = null;
    this._session = null;
    this._handlers = new Map();
    this._pending = new Map(); // ack id -> { resolve, reject, timer, sent, item, publish }
    this._queue = []; // [{ frame, id, entry }] waiting for a connection
    this._sending = false; // whether requests go out now (else they wait in _queue)
    this._lastId = 0;
    this._lastPublishId = 0;
    this._attempt = 0;
    this._upSince = 0;
    this._welcomed = false;
    this._ws = null;
    this._timer = null;
    this.ready = new Promise((resolve, reject) => {
      this._ready = { resolve, reject };
    });
    this.ready.catch(() => {}); // not awaiting `ready` is fine
    this._open();
  }

  // --- the API ------------------------------------------------------------------------

  emit(event, data = null) {
    this._transmit({ frame: this._encode([EMIT, event, data]) });
  }

  call(event, data = null, { timeout = this.timeout } = {}) {
    return this._request([EMIT, event, data], timeout);
  }

  async join(room) {
    const position = await this._request([JOIN, room]);
    this._record(room, position);
    // A message fanned out while the ACK waited may have come first. It has the ACK's
    // epoch (the room had a member: us); an older entry has another one, or a lower seq.
    const ahead = this._ahead.get(room);
    this._ahead.delete(room);
    if (ahead && ahead[0] === position[0]) this._record(room, ahead);
    return position;
  }

  leave(room) {
    this.rooms.delete(room);
    this._ahead.delete(room);
    return this._request([LEAVE, room]);
  }

  async publish(room, event, data = null) {
    const publish = { id: ++this._lastPublishId, room, sent: false };
    return this._request([PUBLISH, room, event, data], this.timeout, { publish });
  }

  on(event, handler) {
    this._handlers.set(event, handler);
    return this;
  }

  off(event) {
    this._handlers.delete(event);
    return this;
  }

  close() {
    if (this.closed) return;
    clearTimeout(this._timer);
    this._shutdown(new EventBusError("disconnected", "the client was closed"));
    if (this._ws) this._ws.close(1000);
  }

  // --- requests -----------------------------------------------------------------------

  /**
   * Send a request (or queue it); a promise of its answer. `publish`: a publish's
   * { id, room, sent }, its publish id going after the ack id. `first`: send it now,
   * ahead of the queue (the RESUME).
   */
  _request(packet, timeout = this.timeout, { publish = null, first = false } = {}) {
    if (this.closed) {
      return Promise.reject(new EventBusError("disconnected", "the client is closed"));
    }
    const id = this._nextId();
    let frame;
    try {
      frame = this._encode(publish ? [...packet, id, publish.id] : [...packet, id]);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, timer: null, sent: false, item: null, publish };
      if (timeout > 0 && timeout < Infinity) {
        entry.timer = setTimeout(() => this._settle(id, entry,
          new EventBusError("timeout", `no answer within ${timeout} ms`)), timeout);
      }
      this._pending.set(id, entry);
      entry.item = { frame, id, entry };
      if (first) this._send(entry.item);
      else this._transmit(entry.item);
    });
  }

  /** 1 to 2^31-1, wrapping, skipping ids still pending. */
  _nextId() {
    do {
      this._lastId = this._lastId >= MAX_ACK_ID ? 1 : this._lastId + 1;
    } while (this._pending.has(this._lastId));
    return this._lastId;
  }

  _transmit(item) {
    if (this._sending) {
      this._send(item);
      return;
    }
    if (this.closed) throw new EventBusError("disconnected", "the client is closed");
    if (item.entry?.publish && this._heldPublishes() >= MAX_HELD_PUBLISHES) {
      this._settle(item.id, item.entry, new EventBusError("disconnected",
        `not connected, and ${MAX_HELD_PUBLISHES} publishes already wait to be sent`));
      return;
    }
    this._queue.push(item);
  }

  _send(item) {
    const { entry } = item;
    if (entry && this._pending.get(item.id) !== entry) return; // timed out
    this._ws.send(item.frame);
    if (entry) {
      entry.sent = true;
      if (entry.publish) entry.publish.sent = true;
    }
  }

  /** Send the queue; from now on requests go out at once. */
  _flush() {
    this._sending = true;
    const queue = this._queue;
    this._queue = [];
    for (const item of queue) this._send(item);
  }

  _heldPublishes() {
    let held = 0;
    for (const { id, entry } of this._queue) {
      if (entry?.publish && this._pending.get(id) === entry) held += 1;
    }
    return held;
  }

  /** Fail each held publish that was on the wire before and for which `why(room)`
   * gives a reason not to send it again. */
  _failResent(why) {
    for (const { id, entry } of this._queue) {
      const reason = entry?.publish?.sent ? why(entry.publish.room) : null;
      if (reason) {
        this._settle(id, entry, new EventBusError("disconnected",
          `${reason}: the publish, whose answer was lost, may have been applied`));
      }
    }
  }

  /** Settle a pending request with a value, or with an Error to reject it. */
  _settle(id, entry, outcome) {
    if (this._pending.get(id) !== entry) return;
    this._pending.delete(id);
    clearTimeout(entry.timer);
    if (outcome instanceof Error) entry.reject(outcome);
    else entry.resolve(outcome);
  }

  /**
   * Record the last position seen in a room. Within an epoch it only moves forward: the
   * server may write a ROOM_EVENT ahead of the ACK of an earlier JOIN. A new epoch
   * replaces it (positions of different epochs cannot be compared).
   */
  _record(room, position) {
    const known = this.rooms.get(room);
    if (!known || known[0] !== position[0] || known[1] < position[1]) {
      this.rooms.set(room, position);
    }
  }

  // --- the connection -----------------------------------------------------------------

  _open() {
    const ws = new this._WebSocket(this.url, [SUBPROTOCOL[this.codec]]);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => this._onMessage(ws, event.data);
    ws.onclose = (event) => this._onClose(ws, event.code, event.reason);
    this._ws = ws;
  }

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    this.connected = false;
    this._sending = false;
    this._ahead.clear(); // their JOINs fail now
    const reconnect = Boolean(this._backoff) && !this.closed && !FINAL_CLOSE_CODES.has(code);
    // Requests on the wire fail, but publishes, held to be sent again (see the top).
    const resend = [];
    let held = reconnect ? this._heldPublishes() : 0;
    for (const [id, entry] of this._pending) {
      if (!entry.sent) continue;
      entry.sent = false;
      if (entry.publish && reconnect && held < MAX_HELD_PUBLISHES) {
        held += 1;
        resend.push(entry.item);
      } else {
        this._settle(id, entry, new EventBusError("disconnected", entry.publish
          ? `connection closed (${code}) before the answer: the publish may have been applied`
          : `connection closed (${code})`));
      }
    }
    this._queue = [...resend, ...this._queue];
    this._hook("ondisconnect", { code, reason, reconnect });
    if (!reconnect) {
      this._shutdown(new EventBusError("disconnected", `connection closed (${code})`));
      return;
    }
    if (this._upSince && Date.now() - this._upSince >= STABLE_MS) this._attempt = 0;
    this._upSince = 0;
    const { initial, factor, cap } = this._backoff;
    const delay = Math.random() * Math.min(cap, initial * factor ** this._attempt++);
    this._timer = setTimeout(() => {
      this._timer = null;
      if (!this.closed) this._open();
    }, delay);
  }

  _shutdown(error) {
    this.closed = true;
    this.connected = false;
    this._sending = false;
    this._resumeToken = null;
    this._session = null;
    for (const [id, entry] of this._pending) this._settle(id, entry, error);
    this._queue = [];
    this._ready.reject(error);
  }

  _onMessage(ws, raw) {
    if (ws !== this._ws) return;
    let packet;
    try {
      packet = this._decode(raw);
    } catch {
      return; // an invalid packet from the server is ignored (PROTOCOL.md section 7.4)
    }
    if (!Array.isArray(packet)) return;
    const [type, a, b, c, d, e] = packet;
    switch (type) {
      case WELCOME:
        return this._onWelcome(ws, a, b, c);
      case EVENT:
        if (a === "$resume_token" && packet.length === 3) return this._onResumeToken(b);
        return this._dispatch(ws, a, b, { event: a, room: null }, packet.length > 3 ? c : null);
      case ROOM_EVENT: {
        const joined = this.rooms.has(a);
        const known = joined ? this.rooms.get(a) : this._ahead.get(a);
        if (known && known[0] === d && known[1] >= e) return; // a repeat (PROTOCOL.md 8)
        // Not in `rooms`: for a JOIN whose ACK has not arrived yet.
        (joined ? this.rooms : this._ahead).set(a, [d, e]);
        return this._dispatch(ws, b, c, { event: b, room: a, epoch: d, seq: e }, null);
      }
      case ACK:
      case ERROR: {
        const entry = this._pending.get(a);
        if (entry) this._settle(a, entry, type === ACK ? b : new EventBusError(b, c));
        else if (type === ERROR && a === null) this._hook("onerror", new EventBusError(b, c));
        return; // an answer with an unknown ack id is ignored
      }
      case GAP:
        return this._hook("ongap", { room: a, count: b });
    }
  }

  _onWelcome(ws, sid, resumeToken, options) {
    this.sid = sid;
    this._resumeToken = resumeToken;
    this.options = options;
    this.protocol = ws.protocol || SUBPROTOCOL.json;
    this.connected = true;
    this._upSince = Date.now();
    const previous = this._welcomed ? this._session : null;
    this._welcomed = true;
    if (previous) {
      this._resume(ws, previous); // the first request on the connection
      this._hook("onwelcome", { sid, options });
      return;
    }
    this._session = { sid, token: resumeToken };
    this._flush();
    this._hook("onwelcome", { sid, options });
    this._ready.resolve(this);
  }

  /** A fresh token for the session of the current connection (PROTOCOL.md 9.1). */
  _onResumeToken(token) {
    if (typeof token !== "string" || this.closed) return;
    this._resumeToken = token;
    this._session = { sid: this.sid, token };
  }

  // --- resuming -----------------------------------------------------------------------

  /** Send RESUME for `session` with the rooms' positions; the queue waits for its answer. */
  _resume(ws, session) {
    const positions = Object.fromEntries(this.rooms);
    this._request([RESUME, session.sid, session.token, positions], 0, { first: true }).then(
      (answer) => this._resumed(ws, Object.keys(positions), answer),
      // "disconnected": the connection is gone, and the next one resumes again.
      (error) => error.code !== "disconnected" && this._notResumed(ws),
    );
  }

  /** The RESUME's ACK: take each room's verdict, then send what waited. */
  _resumed(ws, rooms, answer) {
    if (ws !== this._ws) return;
    this._session = { sid: this.sid, token: this._resumeToken };
    const verdicts = [];
    const unsafe = new Map(); // room -> why a publish id may not hold there
    const rejoin = [];
    for (const room of rooms) {
      const verdict = verdictOf(answer, room);
      if (verdict.recovered !== true) {
        unsafe.set(room, verdict.reason === "history_off" ? "keeps no history"
          : `was not recovered (${verdict.reason})`);
      }
      verdicts.push([room, verdict]);
      if (!this.rooms.has(room)) continue; // left meanwhile (its LEAVE is queued)
      if (verdict.position) this._record(room, verdict.position);
      else if (NOT_JOINED.has(verdict.reason)) this.rooms.delete(room);
      else rejoin.push(verdicts.length - 1); // the server did not join it again
    }
    this._failResent((room) => unsafe.has(room) && `${room} ${unsafe.get(room)}`);
    this._sending = true;
    for (const index of rejoin) {
      const [room, verdict] = verdicts[index];
      verdicts[index] = [room, this._rejoin(room, verdict)];
    }
    this._flush();
    this._reconnected(ws, true, verdicts);
  }

  /** The RESUME failed: join the rooms again, in a new session; report none recovered. */
  _notResumed(ws) {
    if (ws !== this._ws) return;
    this._session = { sid: this.sid, token: this._resumeToken };
    this._failResent(() => "the session could not be resumed");
    this._sending = true;
    const verdicts = [...this.rooms.keys()].map((room) => [
      room, this._rejoin(room, { recovered: false, reason: "resume_failed" })]);
    this._flush();
    this._reconnected(ws, false, verdicts);
  }

  /** JOIN a room again; a promise of `verdict` with the position, or the JOIN's error. */
  _rejoin(room, verdict) {
    return this.join(room).then(
      (position) => ({ ...verdict, position }),
      (error) => {
        if (error.code !== "disconnected" && error.code !== "timeout") this.rooms.delete(room);
        return { ...verdict, error: error.code ?? "internal_error" };
      },
    );
  }

  _reconnected(ws, resumed, verdicts) {
    const sid = this.sid;
    Promise.all(verdicts.map(([, verdict]) => verdict)).then((done) => {
      if (ws !== this._ws) return;
      const rooms = Object.fromEntries(verdicts.map(([room], i) => [room, done[i]]));
      this._hook("onreconnect", { sid, resumed, rooms });
    });
  }

  // --- events -------------------------------------------------------------------------

  /** Run the handler of a direct or room event; answer it if it is a server call. */
  _dispatch(ws, event, data, meta, ackId) {
    const handler = this._handlers.get(event);
    const answer = (packet) => {
      if (ws !== this._ws || !this.connected) return; // that connection is gone
      let frame;
      try {
        frame = this._encode(packet);
      } catch (error) {
        frame = this._encode([ERROR, ackId, "unencodable", String(error.message)]);
      }
      ws.send(frame);
    };
    if (!handler) {
      if (ackId !== null) answer([ERROR, ackId, "unknown_event", `no handler for ${event}`]);
      return;
    }
    Promise.resolve().then(() => handler(data, meta)).then(
      (value) => ackId !== null && answer([ACK, ackId, value ?? null]),
      (error) => {
        if (ackId === null) return report(error);
        const code = typeof error?.code === "string" && CODE.test(error.code)
          ? error.code : "internal_error";
        const message = code === "internal_error" ? "the client's handler failed"
          : String(error?.message ?? "");
        answer([ERROR, ackId, code, message]);
      },
    );
  }

  _hook(name, arg) {
    const hook = this[name];
    if (!hook) {
      if (name === "onerror") console.warn(`eventbus: [${arg.code}] ${arg.message}`);
      if (name === "ongap") console.warn(`eventbus: ${arg.count} lost in ${arg.room}`);
      return;
    }
    try {
      hook.call(this, arg);
    } catch (error) {
      report(error);
    }
  }
}
