// The load generator: one process, one client stack (Node + ws) for every server;
// only the framing differs (eventbus JSON/msgpack, Socket.IO v5 over Engine.IO v4,
// raw echo).
//
//   node loadgen.mjs '<json config>'
//
// Config: {workload: "W1".."W5", flavor: "eventbus"|"socketio"|"raw", url, serverPid,
//          clockTicks, timeout (s), params: {...}}. Prints one JSON object on stdout:
//   {ok, errors, errorCount, losses, metrics, cpu}
// Several nodes of one bus (the fan-out workloads only): `urls` and `serverPids` list
// them, one entry per node; members are spread over the nodes (member i on node
// i % nodes), a lone publisher is on the first, and the CPU and the deliveries are
// also counted per node. `extraPids` ({name: pid}, e.g. the Redis server) are
// processes whose CPU is measured too, and not counted as other processes' load.
// A run with any error or loss has ok=false: it is a failed run, not a number.
//
// Everything is verified: every ack (matched by id, echoed data compared), every
// delivery (per receiver and sender: count, order, no duplicates; the sender of a
// room message never receives it).

import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { Decoder, Encoder } from '@msgpack/msgpack';

const encoder = new Encoder();
const decoder = new Decoder();

const config = JSON.parse(process.argv[2]);
const P = config.params;
const URLS = config.urls && config.urls.length ? config.urls : [config.url];
const SERVER_PIDS =
  config.serverPids && config.serverPids.length ? config.serverPids : config.serverPid ? [config.serverPid] : [];
const EXTRA_PIDS = config.extraPids || {};

// --- error and loss bookkeeping -------------------------------------------------

const errors = [];
let errorCount = 0;
function fail(message) {
  errorCount += 1;
  if (errors.length < 25) errors.push(message);
}

// --- CPU accounting: this process and the server ----------------------------------

// [user, system] CPU seconds of a process, or null.
function pidCpuTimes(pid) {
  if (!pid) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    const ticks = config.clockTicks || 100;
    return [Number(fields[11]) / ticks, Number(fields[12]) / ticks];
  } catch {
    return null;
  }
}

function pidCpuSeconds(pid) {
  const times = pidCpuTimes(pid);
  return times === null ? null : times[0] + times[1];
}

function serverRssKiB() {
  if (!SERVER_PIDS.length) return null;
  try {
    const status = readFileSync(`/proc/${SERVER_PIDS[0]}/status`, 'utf8');
    const match = /VmRSS:\s+(\d+)\s+kB/.exec(status);
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

// Busy seconds of every core (from /proc/stat), to see what other processes took.
function coreBusySeconds() {
  try {
    const out = [];
    for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
      const match = /^cpu(\d+) (.*)$/.exec(line);
      if (!match) continue;
      const f = match[2].trim().split(/\s+/).map(Number);
      // user nice system idle iowait irq softirq steal
      out[Number(match[1])] = (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / (config.clockTicks || 100);
    }
    return out;
  } catch {
    return null;
  }
}

class CpuMeter {
  start() {
    this.t0 = performance.now();
    this.self0 = process.cpuUsage();
    this.servers0 = SERVER_PIDS.map(pidCpuSeconds);
    this.serverTimes0 = SERVER_PIDS.map(pidCpuTimes);
    this.extra0 = Object.fromEntries(Object.entries(EXTRA_PIDS).map(([name, pid]) => [name, pidCpuSeconds(pid)]));
    this.cores0 = coreBusySeconds();
  }

  stop() {
    const wall = (performance.now() - this.t0) / 1000;
    const self = process.cpuUsage(this.self0);
    const selfSeconds = (self.user + self.system) / 1e6;
    const byNode = SERVER_PIDS.map((pid, i) => {
      const now = pidCpuSeconds(pid);
      return now !== null && this.servers0[i] !== null ? now - this.servers0[i] : null;
    });
    const serverSeconds = byNode.length && byNode.every((v) => v !== null) ? byNode.reduce((a, b) => a + b, 0) : null;
    // The same, apart: user (the server's own code) and system (the kernel, for it).
    const times = SERVER_PIDS.map((pid, i) => {
      const now = pidCpuTimes(pid);
      const then = this.serverTimes0[i];
      return now !== null && then !== null ? [now[0] - then[0], now[1] - then[1]] : null;
    });
    const timesKnown = times.length > 0 && times.every((v) => v !== null);
    const extra = {};
    for (const [name, pid] of Object.entries(EXTRA_PIDS)) {
      const now = pidCpuSeconds(pid);
      extra[name] = now !== null && this.extra0[name] !== null ? now - this.extra0[name] : null;
    }
    const extraSeconds = Object.values(extra).reduce((a, b) => a + (b || 0), 0);
    const cores1 = coreBusySeconds();
    const cores = cores1 && this.cores0 ? cores1.map((busy, i) => (busy - this.cores0[i]) / wall) : null;
    const ours = selfSeconds + (serverSeconds || 0) + extraSeconds;
    const busy = cores ? cores.reduce((a, b) => a + b, 0) : null;
    return {
      wall_s: wall,
      loadgen_cpu_s: selfSeconds,
      loadgen_cpu: selfSeconds / wall,
      loadgen_user_s: self.user / 1e6,
      loadgen_system_s: self.system / 1e6,
      // All the nodes together, and each (in the order of serverPids).
      server_cpu_s: serverSeconds,
      server_cpu: serverSeconds === null ? null : serverSeconds / wall,
      server_cpu_s_by_node: byNode,
      server_user_s: timesKnown ? times.reduce((a, t) => a + t[0], 0) : null,
      server_system_s: timesKnown ? times.reduce((a, t) => a + t[1], 0) : null,
      // Other measured processes (extraPids), e.g. {redis: seconds}.
      extra_cpu_s: extra,
      // Busy share of each core, and what processes other than the server(s), the
      // extraPids and the load generator took (in cores): kernel work for loopback
      // traffic counts partly here, so a few percent is normal.
      core_busy: cores,
      foreign_cpu: busy === null ? null : Math.max(0, busy - ours / wall),
    };
  }
}

// --- payloads -----------------------------------------------------------------

const PAD = 'x'.repeat(72); // {"c":12,"n":345,"t":"xxx…"} is about 100 bytes of JSON
const ROOM = 'bench';

// Fast paths for the bulk of the traffic, room deliveries of small payloads: a strict
// match of the exact compact JSON a server produces for them (every field checked:
// sender, number, the whole padding), so that the generator does not spend its core on
// JSON.parse. Anything that does not match exactly goes through JSON.parse as usual.
const FAST_EVENTBUS = new RegExp(
  `^\\[3,"${ROOM}","msg",\\{"c":(\\d+),"n":(\\d+),"t":"${PAD}"\\},"[!-~]+",\\d+\\]$`,
);
const FAST_SOCKETIO = new RegExp(`^42\\["msg",\\{"c":(\\d+),"n":(\\d+),"t":"${PAD}"\\}\\]$`);

function smallData(c, n) {
  return { c, n, t: PAD };
}

function binaryData(c, n, size) {
  const b = Buffer.allocUnsafe(size);
  b.fill(n & 0xff);
  return { c, n, b };
}

function isBytes(value) {
  return value instanceof Uint8Array;
}

// --- clients: one interface, three framings -----------------------------------------
//
// client.open() -> Promise (resolves when the session is ready: eventbus WELCOME,
// Socket.IO "40{sid}", raw: open). client.request(kind, args, callback(err, data)).
// client.onDelivery(event, data) is called for room deliveries.

const ACK_TIMEOUT_NOTE = 'no answer before the run ended';

class BaseClient {
  constructor(index, url, protocols) {
    this.index = index;
    this.url = url;
    this.protocols = protocols;
    this.pending = new Map();
    this.nextId = 1;
    this.onDelivery = null;
    this.ready = false;
    this.closedUnexpectedly = false;
    this.finished = false; // set when the run is over: closes are then expected
  }

  open() {
    return new Promise((resolve, reject) => {
      this.resolveOpen = resolve;
      this.rejectOpen = reject;
      const ws = new WebSocket(this.url, this.protocols, {
        perMessageDeflate: false,
        skipUTF8Validation: true,
        maxPayload: 64 * 1024 * 1024,
      });
      this.ws = ws;
      ws.on('message', (data, isBinary) => {
        try {
          this.onMessage(data, isBinary);
        } catch (err) {
          fail(`client ${this.index}: cannot handle a message: ${err.stack || err}`);
        }
      });
      ws.on('error', (err) => {
        if (!this.ready) reject(err);
        else if (!this.finished) fail(`client ${this.index}: ${err.message}`);
      });
      ws.on('close', (code, reason) => {
        if (!this.ready) {
          reject(new Error(`closed before ready: ${code} ${reason}`));
        } else if (!this.finished) {
          this.closedUnexpectedly = true;
          fail(`client ${this.index}: connection closed by the server: ${code} ${reason}`);
        }
        for (const [, entry] of this.pending) entry.callback(new Error('connection closed'));
        this.pending.clear();
      });
      this.onSocketCreated();
    });
  }

  onSocketCreated() {}

  markReady() {
    this.ready = true;
    this.resolveOpen();
  }

  allocate(callback, extra) {
    const id = this.nextId;
    this.nextId = id >= 2147483647 ? 1 : id + 1;
    this.pending.set(id, { callback, extra });
    return id;
  }

  answer(id, err, data) {
    const entry = this.pending.get(id);
    if (entry === undefined) {
      fail(`client ${this.index}: answer for an unknown or already answered request id ${id}`);
      return;
    }
    this.pending.delete(id);
    entry.callback(err, data, entry.extra);
  }

  close() {
    this.finished = true;
    try {
      this.ws.terminate();
    } catch {
      // already gone
    }
  }
}

class EventbusClient extends BaseClient {
  constructor(index, url, codec) {
    super(index, url, [codec === 'msgpack' ? 'eventbus.v1.msgpack' : 'eventbus.v1.json']);
    this.codec = codec;
    this.binary = codec === 'msgpack';
  }

  send(packet) {
    if (this.binary) this.ws.send(encoder.encode(packet), { binary: true });
    else this.ws.send(JSON.stringify(packet), { binary: false });
  }

  onMessage(data, isBinary) {
    if (isBinary !== this.binary) {
      fail(`client ${this.index}: ${isBinary ? 'binary' : 'text'} frame on a ${this.codec} connection`);
      return;
    }
    let packet;
    if (this.binary) {
      packet = decoder.decode(data);
    } else {
      const text = data.toString();
      if (text.charCodeAt(1) === 51 /* [3, */ && this.onDelivery) {
        const match = FAST_EVENTBUS.exec(text);
        if (match !== null) {
          this.onDelivery('msg', { c: Number(match[1]), n: Number(match[2]), t: PAD });
          return;
        }
      }
      packet = JSON.parse(text);
    }
    switch (packet[0]) {
      case 3: // ROOM_EVENT [3, room, event, data, epoch, seq]
        if (this.onDelivery) this.onDelivery(packet[2], packet[3]);
        else fail(`client ${this.index}: unexpected room event`);
        break;
      case 7: // ACK [7, ack_id, data]
        this.answer(packet[1], null, packet[2]);
        break;
      case 8: // ERROR [8, ack_id, code, message]
        if (packet[1] === null) fail(`client ${this.index}: error ${packet[2]}: ${packet[3]}`);
        else this.answer(packet[1], new Error(`${packet[2]}: ${packet[3]}`));
        break;
      case 0: // WELCOME
        this.sid = packet[1];
        this.markReady();
        break;
      case 9: // GAP: messages were dropped
        fail(`client ${this.index}: GAP, ${packet[2]} messages dropped in room ${packet[1]}`);
        break;
      default:
        fail(`client ${this.index}: unexpected packet type ${packet[0]}`);
    }
  }

  emit(event, data, callback) {
    this.send([1, event, data, this.allocate(callback)]);
  }

  join(room, callback) {
    this.send([4, room, this.allocate(callback)]);
  }

  publish(room, data, callback) {
    this.send([6, room, 'msg', data, this.allocate(callback)]);
  }
}

// Socket.IO v5 over Engine.IO v4 on a plain WebSocket (?EIO=4&transport=websocket):
// "0{...}" open, "40" → "40{sid}", events 42[...], acks 42<id>[...] → 43<id>[...],
// binary events 45<n>-<id>[...] followed by n binary frames, ping "2" → "3".
class SocketioClient extends BaseClient {
  constructor(index, url) {
    super(index, `${url.replace(/\/$/, '')}/socket.io/?EIO=4&transport=websocket`, undefined);
    this.attachments = null; // [header packet, expected count, buffers]
  }

  onMessage(data, isBinary) {
    if (isBinary) {
      if (this.attachments === null) {
        fail(`client ${this.index}: binary frame without a binary packet header`);
        return;
      }
      const state = this.attachments;
      state.buffers.push(data);
      if (state.buffers.length === state.count) {
        this.attachments = null;
        this.onPacket(state.type, state.id, reconstruct(state.payload, state.buffers));
      }
      return;
    }
    const text = data.toString();
    const eio = text.charCodeAt(0);
    if (eio === 52 /* '4' message */) {
      if (text.charCodeAt(1) === 50 /* 42[ */ && text.charCodeAt(2) === 91 && this.onDelivery) {
        const match = FAST_SOCKETIO.exec(text);
        if (match !== null) {
          this.onDelivery('msg', { c: Number(match[1]), n: Number(match[2]), t: PAD });
          return;
        }
      }
      this.onSocketioPacket(text);
    } else if (eio === 50 /* '2' ping */) {
      this.ws.send('3');
    } else if (eio === 48 /* '0' open */) {
      this.ws.send('40');
    } else if (eio === 49 /* '1' close */) {
      if (!this.finished) fail(`client ${this.index}: Engine.IO close from the server`);
    } else {
      fail(`client ${this.index}: unexpected Engine.IO packet ${text.slice(0, 40)}`);
    }
  }

  onSocketioPacket(text) {
    const type = text.charCodeAt(1) - 48;
    let i = 2;
    let count = 0;
    if (type === 5 || type === 6) {
      const dash = text.indexOf('-', i);
      count = Number(text.slice(i, dash));
      i = dash + 1;
    }
    if (text.charCodeAt(i) === 47 /* '/' namespace */) {
      const comma = text.indexOf(',', i);
      i = comma + 1;
    }
    let start = i;
    while (i < text.length && text.charCodeAt(i) >= 48 && text.charCodeAt(i) <= 57) i += 1;
    const id = i > start ? Number(text.slice(start, i)) : null;
    const payload = i < text.length ? JSON.parse(text.slice(i)) : null;
    if (type === 0) {
      // CONNECT answered: 40{"sid":...}
      this.sid = payload && payload.sid;
      this.markReady();
      return;
    }
    if (type === 5 || type === 6) {
      this.attachments = { type: type - 3, id, payload, count, buffers: [] };
      return;
    }
    if (type === 4) {
      const message = JSON.stringify(payload);
      if (!this.ready) this.rejectOpen(new Error(`connect error ${message}`));
      else fail(`client ${this.index}: connect error ${message}`);
      return;
    }
    this.onPacket(type, id, payload);
  }

  onPacket(type, id, payload) {
    if (type === 2) {
      // EVENT ["msg", data]
      if (payload[0] === 'msg' && this.onDelivery) this.onDelivery('msg', payload[1]);
      else fail(`client ${this.index}: unexpected event ${JSON.stringify(payload).slice(0, 80)}`);
    } else if (type === 3) {
      this.answer(id, null, payload[0]);
    } else if (type === 1) {
      if (!this.finished) fail(`client ${this.index}: disconnected by the server`);
    } else {
      fail(`client ${this.index}: unexpected Socket.IO packet type ${type}`);
    }
  }

  sendEvent(args, callback) {
    const id = this.allocate(callback);
    const buffers = [];
    const json = JSON.stringify(deconstruct(args, buffers));
    if (buffers.length === 0) {
      this.ws.send(`42${id}${json}`);
      return;
    }
    this.ws.send(`45${buffers.length}-${id}${json}`);
    for (const buffer of buffers) this.ws.send(buffer, { binary: true });
  }

  emit(event, data, callback) {
    this.sendEvent([event, data], callback);
  }

  join(room, callback) {
    this.sendEvent(['join', room], callback);
  }

  publish(room, data, callback) {
    this.sendEvent(['publish', room, data], callback);
  }
}

function deconstruct(value, buffers) {
  if (isBytes(value)) {
    buffers.push(value);
    return { _placeholder: true, num: buffers.length - 1 };
  }
  if (Array.isArray(value)) return value.map((item) => deconstruct(item, buffers));
  if (value !== null && typeof value === 'object') {
    const out = {};
    for (const key of Object.keys(value)) out[key] = deconstruct(value[key], buffers);
    return out;
  }
  return value;
}

function reconstruct(value, buffers) {
  if (Array.isArray(value)) return value.map((item) => reconstruct(item, buffers));
  if (value !== null && typeof value === 'object') {
    if (value._placeholder === true && typeof value.num === 'number') return buffers[value.num];
    const out = {};
    for (const key of Object.keys(value)) out[key] = reconstruct(value[key], buffers);
    return out;
  }
  return value;
}

// Raw echo: the same text an eventbus JSON EMIT would carry is sent, and must come
// back byte for byte; the echo is the "ack".
class RawClient extends BaseClient {
  constructor(index, url) {
    super(index, url, undefined);
  }

  onSocketCreated() {
    this.ws.on('open', () => this.markReady());
  }

  onMessage(data, isBinary) {
    if (isBinary) {
      fail(`client ${this.index}: binary echo of a text message`);
      return;
    }
    const text = data.toString();
    const packet = JSON.parse(text);
    const id = packet[3];
    const entry = this.pending.get(id);
    if (entry === undefined) {
      fail(`client ${this.index}: echo for an unknown or already echoed id ${id}`);
      return;
    }
    if (entry.extra !== text) {
      fail(`client ${this.index}: echo differs from what was sent`);
    }
    this.answer(id, null, packet[2]);
  }

  emit(event, data, callback) {
    const id = this.nextId;
    const text = JSON.stringify([1, event, data, id]);
    this.allocate(callback, text);
    this.ws.send(text);
  }
}

function makeClient(index, codec, url) {
  if (config.flavor === 'eventbus') return new EventbusClient(index, url, codec);
  if (config.flavor === 'socketio') return new SocketioClient(index, url);
  if (config.flavor === 'raw') return new RawClient(index, url);
  throw new Error(`unknown flavor ${config.flavor}`);
}

// Open `count` clients, at most `concurrency` handshakes at a time; client i connects
// to node nodeFor(i) (an index into URLS; the first node by default).
async function openClients(count, concurrency, codecFor, nodeFor = () => 0) {
  const clients = new Array(count);
  let next = 0;
  let failed = 0;
  async function worker() {
    while (next < count) {
      const index = next;
      next += 1;
      const node = nodeFor(index);
      const client = makeClient(index, codecFor(index), URLS[node]);
      client.node = node;
      clients[index] = client;
      try {
        await client.open();
      } catch (err) {
        failed += 1;
        fail(`client ${index}: could not open: ${err.message}`);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return { clients, failed };
}

function requestAll(clients, send) {
  return Promise.all(
    clients.map(
      (client) =>
        new Promise((resolve) => {
          send(client, (err, data) => {
            if (err) fail(`client ${client.index}: request failed: ${err.message}`);
            resolve(data);
          });
        }),
    ),
  );
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

// --- W1: ack round trips ---------------------------------------------------------------

async function w1() {
  const { clients, failed } = await openClients(P.conns, P.conns, () => 'json');
  if (failed) return { losses: { unopened: failed } };
  const latencies = [];
  let measuring = !P.warmup_s;
  let stopping = false;
  let sent = 0;
  let acked = 0;
  let measuredAcks = 0;
  let outstanding = 0;
  const perClientQuota = P.acks ? Math.ceil(P.acks / P.conns) : Infinity;
  let resolveDone;
  const done = new Promise((resolve) => {
    resolveDone = resolve;
  });

  function next(client) {
    if (stopping || client.count >= perClientQuota) {
      if (outstanding === 0) resolveDone();
      return;
    }
    const n = client.count;
    client.count += 1;
    const data = smallData(client.index, n);
    const t0 = performance.now();
    sent += 1;
    outstanding += 1;
    client.emit('echo', data, (err, answer) => {
      outstanding -= 1;
      if (err) {
        fail(`client ${client.index}: echo ${n} failed: ${err.message}`);
      } else if (
        answer === null || typeof answer !== 'object' || answer.c !== client.index ||
        answer.n !== n || answer.t !== PAD
      ) {
        fail(`client ${client.index}: echo ${n} answered with other data`);
      } else {
        acked += 1;
        if (measuring) {
          measuredAcks += 1;
          latencies.push(performance.now() - t0);
        }
      }
      if (!client.closedUnexpectedly) next(client);
      else if (outstanding === 0) resolveDone();
    });
  }

  for (const client of clients) client.count = 0;
  const cpu = new CpuMeter();
  let window = null;
  if (P.warmup_s) {
    for (const client of clients) next(client);
    await sleep(P.warmup_s * 1000);
    measuring = true;
  }
  cpu.start();
  const t0 = performance.now();
  if (!P.warmup_s) for (const client of clients) next(client);
  if (P.duration_s) {
    await Promise.race([sleep(P.duration_s * 1000), done]);
    window = (performance.now() - t0) / 1000;
    measuring = false;
    stopping = true;
  }
  const cpuUse = P.duration_s ? cpu.stop() : null;
  // Wait for the requests still in flight: a missing ack is a loss.
  const drained = await Promise.race([done.then(() => true), sleep(10000).then(() => false)]);
  if (!P.duration_s) window = (performance.now() - t0) / 1000;
  const cpuFinal = cpuUse || cpu.stop();
  let unanswered = 0;
  for (const client of clients) unanswered += client.pending.size;
  if (!drained) fail(`${unanswered} echo requests never answered`);
  for (const client of clients) client.close();
  latencies.sort((a, b) => a - b);
  return {
    losses: { unanswered },
    cpu: cpuFinal,
    metrics: {
      conns: P.conns,
      acks: measuredAcks,
      acks_total: acked,
      requests_sent: sent,
      window_s: window,
      acks_per_s: measuredAcks / window,
      p50_ms: percentile(latencies, 0.5),
      p99_ms: percentile(latencies, 0.99),
      mean_ms: latencies.reduce((a, b) => a + b, 0) / (latencies.length || 1),
    },
  };
}

// --- W2 / W5: room fan-out (W4 too, with every member publishing binary) ---------------

async function fanOut({ members, publishers, messages, window, codecFor, payload, size }) {
  // Clients 0..members-1 receive; publishers are members too (the room's
  // broadcast-except-sender must skip them). For W2/W5 the publisher is one extra
  // member; for W4 every member publishes.
  const total = members;
  const room = ROOM;
  const senders = publishers; // indices of publishing clients
  const isSender = new Set(senders);
  // Several nodes: members spread over them, a lone publisher on the first.
  const nodes = URLS.length;
  const nodeFor = (i) => (senders.length === 1 && isSender.has(i) ? 0 : i % nodes);
  const tOpen = performance.now();
  const { clients, failed } = await openClients(total, P.open_concurrency || 100, codecFor, nodeFor);
  if (failed) return { losses: { unopened: failed } };
  const openSeconds = (performance.now() - tOpen) / 1000;
  // expected[receiver][senderSlot] = next n expected
  const slotOf = new Map(senders.map((s, slot) => [s, slot]));
  let receiversDone = 0;
  const receivers = clients.filter((client) => !(senders.length === 1 && isSender.has(client.index)));
  const perReceiver = (client) => (isSender.has(client.index) ? senders.length - 1 : senders.length) * messages;
  let tLast = 0;
  let delivered = 0;
  const deliveredByNode = new Array(nodes).fill(0);
  let resolveAll;
  const allDone = new Promise((resolve) => {
    resolveAll = resolve;
  });
  let acksOutstanding = senders.length * messages;
  let finishedAt = null;
  function maybeFinished() {
    if (receiversDone === receivers.length && acksOutstanding === 0 && finishedAt === null) {
      finishedAt = performance.now();
      resolveAll();
    }
  }

  for (const client of clients) {
    client.expected = new Int32Array(senders.length);
    client.got = 0;
    client.want = isSender.has(client.index) && senders.length === 1 ? 0 : perReceiver(client);
    client.onDelivery = (event, data) => {
      const slot = data === null || typeof data !== 'object' ? undefined : slotOf.get(data.c);
      if (event !== 'msg' || slot === undefined) {
        fail(`client ${client.index}: delivery of unknown origin`);
        return;
      }
      if (data.c === client.index) {
        fail(`client ${client.index}: received its own message ${data.n} (sender not skipped)`);
        return;
      }
      const want = client.expected[slot];
      if (data.n !== want) {
        fail(
          `client ${client.index}: from ${data.c} got message ${data.n}, expected ${want}` +
            (data.n < want ? ' (duplicate or reordered)' : ' (missing or reordered)'),
        );
        if (data.n < want) return;
      }
      if (payload === 'binary') {
        const b = data.b;
        if (!isBytes(b) || b.length !== size || b[0] !== (data.n & 0xff) || b[size - 1] !== (data.n & 0xff)) {
          fail(`client ${client.index}: message ${data.n} from ${data.c} has a damaged payload`);
        }
      } else if (data.t !== PAD) {
        fail(`client ${client.index}: message ${data.n} from ${data.c} has a damaged payload`);
      }
      client.expected[slot] = data.n + 1;
      client.got += 1;
      delivered += 1;
      deliveredByNode[client.node] += 1;
      if (client.got === client.want) {
        receiversDone += 1;
        tLast = performance.now();
        maybeFinished();
      } else if (client.got > client.want) {
        fail(`client ${client.index}: more messages than were sent`);
      }
    };
  }

  // Everyone joins the room.
  await requestAll(clients, (client, cb) => client.join(room, cb));

  const cpu = new CpuMeter();
  cpu.start();
  const t0 = performance.now();
  let tAcks = 0;
  for (const s of senders) {
    const client = clients[s];
    let nextN = 0;
    let inflight = 0;
    const pump = () => {
      while (inflight < window && nextN < messages && !client.closedUnexpectedly) {
        const n = nextN;
        nextN += 1;
        inflight += 1;
        const data = payload === 'binary' ? binaryData(s, n, size) : smallData(s, n);
        client.publish(room, data, (err) => {
          inflight -= 1;
          acksOutstanding -= 1;
          if (err) fail(`client ${s}: publish ${n} failed: ${err.message}`);
          if (acksOutstanding === 0) tAcks = performance.now();
          pump();
          maybeFinished();
        });
      }
    };
    pump();
  }
  const finished = await Promise.race([allDone.then(() => true), sleep(P.deadline_s * 1000).then(() => false)]);
  const cpuUse = cpu.stop();
  // Any late duplicate or stray message shows up within this grace period.
  await sleep(finished ? 300 : 0);
  let missing = 0;
  let incomplete = 0;
  for (const client of clients) {
    if (client.got < client.want) {
      missing += client.want - client.got;
      incomplete += 1;
    }
  }
  if (!finished) {
    fail(`not finished within ${P.deadline_s} s: ${missing} deliveries missing at ${incomplete} members, ${acksOutstanding} publish acks missing`);
  }
  for (const client of clients) client.close();
  const seconds = ((finished ? tLast : performance.now()) - t0) / 1000;
  const expectedTotal = clients.reduce((sum, client) => sum + client.want, 0);
  const metrics = {
    members: total,
    publishers: senders.length,
    messages_per_publisher: messages,
    window,
    deliveries: delivered,
    deliveries_expected: expectedTotal,
    nodes,
    deliveries_by_node: deliveredByNode,
    members_by_node: Array.from({ length: nodes }, (_, k) => clients.filter((c) => c.node === k).length),
    seconds_to_last_delivery: seconds,
    seconds_to_last_ack: tAcks ? (tAcks - t0) / 1000 : null,
    deliveries_per_s: delivered / seconds,
    open_s: openSeconds,
  };
  if (payload === 'binary') {
    metrics.payload_bytes = size;
    metrics.mb_per_s = (delivered * size) / seconds / 1e6;
  }
  return { losses: { missing_deliveries: missing, missing_acks: acksOutstanding }, cpu: cpuUse, metrics };
}

async function w2(mixed) {
  const members = P.members + 1; // the publisher is the extra member, index P.members
  return fanOut({
    members,
    publishers: [P.members],
    messages: P.messages,
    window: P.window,
    codecFor: (i) => (mixed && i < P.members && i % 2 === 1 ? 'msgpack' : 'json'),
    payload: 'small',
  });
}

async function w4() {
  return fanOut({
    members: P.conns,
    publishers: Array.from({ length: P.conns }, (_, i) => i),
    messages: P.messages,
    window: P.window,
    codecFor: () => 'msgpack',
    payload: 'binary',
    size: P.size,
  });
}

// --- W3: idle connections -------------------------------------------------------------

async function w3() {
  // A few connections first, closed again, so that what is loaded or allocated once
  // (imports, caches) is not counted per connection.
  const warm = await openClients(P.warmup_conns || 10, 10, () => 'json');
  for (const client of warm.clients) client.close();
  await sleep(1000);
  const rssBefore = serverRssKiB();
  const cpu = new CpuMeter();
  cpu.start();
  const t0 = performance.now();
  const { clients, failed } = await openClients(P.conns, P.concurrency, () => 'json');
  const openSeconds = (performance.now() - t0) / 1000;
  const cpuUse = cpu.stop();
  await sleep(P.settle_s * 1000);
  const rssAfter = serverRssKiB();
  let dropped = 0;
  for (const client of clients) if (client && client.closedUnexpectedly) dropped += 1;
  for (const client of clients) if (client) client.close();
  return {
    losses: { unopened: failed, dropped },
    cpu: cpuUse,
    metrics: {
      conns: P.conns,
      concurrency: P.concurrency,
      open_s: openSeconds,
      conns_per_s: P.conns / openSeconds,
      rss_before_kib: rssBefore,
      rss_after_kib: rssAfter,
      bytes_per_conn: rssBefore === null ? null : ((rssAfter - rssBefore) * 1024) / P.conns,
    },
  };
}

// --- main -----------------------------------------------------------------------------

async function main() {
  const runners = { W1: w1, W2: () => w2(false), W3: w3, W4: w4, W5: () => w2(true) };
  const runner = runners[config.workload];
  if (!runner) throw new Error(`unknown workload ${config.workload}`);
  const timer = setTimeout(() => {
    fail(`hard timeout: the run took more than ${config.timeout} s`);
    finish({ losses: { timeout: 1 } });
  }, config.timeout * 1000);
  const result = await runner();
  clearTimeout(timer);
  finish(result);
}

function finish(result) {
  const losses = result.losses || {};
  const lost = Object.values(losses).reduce((a, b) => a + (b || 0), 0);
  const out = {
    ok: errorCount === 0 && lost === 0,
    workload: config.workload,
    flavor: config.flavor,
    errorCount,
    errors,
    losses,
    metrics: result.metrics || {},
    cpu: result.cpu || null,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(0));
}

main().catch((err) => {
  fail(`load generator crashed: ${err.stack || err}`);
  finish({});
});
