// Drives two headless Chromium pages against a running eventbus server and prints what
// happened as one JSON object on stdout; test_browser.py starts the server and asserts.
//
//   node run.mjs http://127.0.0.1:PORT ws://127.0.0.1:FREE_PORT/
//                                           (env CHROMIUM: the browser, default /usr/bin/chromium)
//
// FREE_PORT is a port nothing listens on, for a connection that fails (close code 1006).
//
// Page A speaks JSON, page B msgpack. The test page and @msgpack/msgpack's ESM build are
// served through page routes on the server's own origin; /eventbus.js comes from the
// server itself.

import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const started = Date.now();
const HERE = dirname(fileURLToPath(import.meta.url));
const MSGPACK = join(HERE, "node_modules", "@msgpack", "msgpack", "dist.esm");
const [base, refusedUrl] = process.argv.slice(2);
if (!refusedUrl) throw new Error("usage: node run.mjs http://127.0.0.1:PORT ws://127.0.0.1:FREE_PORT/");
const result = { console: [], refusedUrl };
const mark = (step) => console.error(`run.mjs: ${((Date.now() - started) / 1000).toFixed(2)} s ${step}`);
const watchdog = setTimeout(() => {
  console.error(`run.mjs: gave up after 40 s; so far: ${JSON.stringify(result)}`);
  process.exit(3);
}, 40_000);

const userDataDir = await mkdtemp(join(tmpdir(), "eventbus-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // The test page is fulfilled by a route, so Chromium cannot tell it comes from a
  // loopback address and treats it as public; Local Network Access would then block
  // its WebSocket to 127.0.0.1 unless the page holds this permission.
  permissions: ["local-network-access"],
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
mark("browser started");

try {
  await context.route(`${base}/test.html`, async (route) => {
    await route.fulfill({ contentType: "text/html", body: await readFile(join(HERE, "page.html")) });
  });
  await context.route(`${base}/msgpack/**`, async (route) => {
    const rest = normalize(new URL(route.request().url()).pathname.slice("/msgpack/".length));
    if (rest.startsWith("..")) return route.fulfill({ status: 404 });
    await route.fulfill({ contentType: "text/javascript", body: await readFile(join(MSGPACK, rest)) });
  });

  const open = async (name) => {
    const page = await context.newPage();
    page.on("console", (msg) => result.console.push(`${name} ${msg.type()}: ${msg.text()}`));
    page.on("pageerror", (error) => result.console.push(`${name} pageerror: ${error.message}`));
    await page.goto(`${base}/test.html`);
    await page.waitForFunction(() => window.loaded === true, null, { timeout: 10_000 });
    return page;
  };
  const a = await open("A");
  const b = await open("B");
  const until = (page, fn, arg) => page.waitForFunction(fn, arg, { timeout: 5000 });
  const settle = () => new Promise((resolve) => setTimeout(resolve, 150));

  // Connect: A with the default URL (the server that served eventbus.js), B with msgpack.
  mark("connect");
  result.welcomeA = await a.evaluate(() => window.setup("json", true));
  result.welcomeB = await b.evaluate(() => window.setup("msgpack", false));

  // Both join the room; messages go to every member except the sender.
  mark("both join the room");
  result.joinA = await a.evaluate(() => outcome(bus.join("lobby")));
  result.joinB = await b.evaluate(() => outcome(bus.join("lobby")));
  result.pub1 = await a.evaluate(() => outcome(bus.publish("lobby", "chat", { text: "one", from: "A" })));
  await until(b, () => log.chat.length >= 1);
  result.pub2 = await b.evaluate(() => outcome(bus.publish("lobby", "chat", { text: "two", from: "B" })));
  await until(a, () => log.chat.length >= 1);
  result.pub3 = await a.evaluate(() => outcome(bus.publish("lobby", "chat", { text: "three", from: "A" })));
  await until(b, () => log.chat.length >= 2);
  result.pub4 = await b.evaluate(() => outcome(bus.publish("lobby", "chat", { text: "four", from: "B" })));
  await until(a, () => log.chat.length >= 2);
  await settle();
  result.chatA = await a.evaluate(() => plain(log.chat));
  result.chatB = await b.evaluate(() => plain(log.chat));
  result.roomsA = await a.evaluate(() => Object.fromEntries(bus.rooms));

  // Binary data: a round trip through msgpack, and a room message JSON cannot carry.
  mark("binary data");
  result.echoBinary = await b.evaluate(() => {
    const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
    return outcome(bus.call("echo", bytes));
  });
  result.echoNested = await b.evaluate(() =>
    outcome(bus.call("echo", { blob: new Uint8Array([0, 255, 128]), list: [1, 2.5, "é", null] })));
  result.echoIsUint8Array = await b.evaluate(async () =>
    (await bus.call("echo", new Uint8Array([7]))) instanceof Uint8Array);
  result.pubBinary = await b.evaluate(() => outcome(bus.publish("lobby", "blob", new Uint8Array([1, 2, 3]))));
  await until(a, () => log.errors.length >= 1);
  await settle();
  result.errorsA = await a.evaluate(() => log.errors);
  result.blobA = await a.evaluate(() => log.blob);
  result.echoBinaryOverJson = await a.evaluate(() => outcome(bus.call("echo", new Uint8Array(2))));
  result.echoNaN = await a.evaluate(() => outcome(bus.call("echo", NaN)));
  result.echoJson = await a.evaluate(() => outcome(bus.call("echo", { x: 1, s: "héllo ✓", n: null })));

  // Request errors: a timeout, an unknown event, a reserved room name.
  mark("request errors");
  result.timeout = await a.evaluate(() => outcome(bus.call("slow", 2000, { timeout: 300 })));
  result.unknown = await a.evaluate(() => outcome(bus.call("nope", null)));
  result.reserved = await a.evaluate(() => outcome(bus.join("$admin")));

  // Server calls into the pages: answered, refused with a code, crashed, unhandled.
  mark("server calls into the pages");
  await a.evaluate(() => bus.on("confirm", () => {
    throw Object.assign(new Error("user declined"), { code: "forbidden" });
  }));
  await b.evaluate(() => {
    bus.on("confirm", async (data, meta) => ({ ok: true, data, meta }));
    bus.on("crash", () => { throw new Error("boom"); });
  });
  result.askA = await a.evaluate(() => outcome(bus.call("ask", { event: "confirm", data: 1 })));
  result.askB = await b.evaluate(() => outcome(bus.call("ask", { event: "confirm", data: 2 })));
  result.askCrash = await b.evaluate(() => outcome(bus.call("ask", { event: "crash", data: null })));
  result.askNoHandler = await b.evaluate(() => outcome(bus.call("ask", { event: "nothing", data: null })));

  // A direct event, and volatile events the server drops (reported by GAP).
  mark("a direct event");
  result.notify = await a.evaluate(() => outcome(bus.call("notify", "hello")));
  await until(a, () => log.notice.length >= 1);
  result.noticeA = await a.evaluate(() => log.notice);
  result.flood = await b.evaluate(() => outcome(bus.call("flood", 300)));
  await b.evaluate(() => bus.call("echo", null)); // after the flood has been drained
  await settle();
  result.floodB = await b.evaluate(() => ({ ticks: log.ticks, gaps: log.gaps }));

  // Ack ids wrap from 2^31-1 to 1 and skip ids still pending.
  mark("ack ids");
  result.wrap = await b.evaluate(async () => {
    bus._lastId = 2 ** 31 - 3;
    const answers = await Promise.all([1, 2, 3, 4].map((n) => bus.call("echo", n)));
    const afterWrap = bus._lastId;
    bus._pending.set(1, {});
    bus._pending.set(2, {});
    bus._lastId = 2 ** 31 - 1;
    const skipped = bus._nextId();
    bus._pending.delete(1);
    bus._pending.delete(2);
    return { answers, afterWrap, skipped };
  });

  // The server drops A's connection: the pending call fails at once, A reconnects,
  // joins the room again, and the request made while it was down goes out.
  mark("kick");
  result.kick = await a.evaluate(async () => {
    const sidBefore = bus.sid;
    const pending = outcome(bus.call("slow", 3000, { timeout: 8000 }));
    bus.emit("kick", null);
    const call = await pending;
    return { sidBefore, call };
  });
  await until(a, () => log.reconnects.length >= 1);
  result.reconnect = await a.evaluate(async () => ({
    sid: bus.sid, disconnects: log.disconnects, reconnects: log.reconnects,
    welcomes: log.welcomes, queued: await log.queued, connected: bus.connected,
  }));
  result.pub5 = await b.evaluate(() => outcome(bus.publish("lobby", "chat", { text: "five", from: "B" })));
  await until(a, () => log.chat.length >= 3);
  result.chatAAfterReconnect = await a.evaluate(() => plain(log.chat));

  // close(): no reconnect, later requests fail.
  mark("close()");
  result.closed = await a.evaluate(async () => {
    bus.close();
    const call = await outcome(bus.call("echo", 1));
    await new Promise((resolve) => setTimeout(resolve, 300));
    return { call, closed: bus.closed, connected: bus.connected, disconnects: log.disconnects };
  });
  result.leaveB = await b.evaluate(() => outcome(bus.leave("lobby")));
  result.roomsB = await b.evaluate(() => [...bus.rooms.keys()]);

  // Each close code: does a new client reconnect after it (PROTOCOL.md section 14)?
  mark("close codes");
  result.closeCodes = [];
  for (const code of [1000, 1001, 1002, 1006, 1007, 1009, 1011, 4000, 4001, 4002, 4003, 4004]) {
    result.closeCodes.push(await a.evaluate(([c, url]) => closeWith(c, url), [code, refusedUrl]));
  }

  // Room positions only move forward, against a scripted stand-in for the server.
  mark("positions");
  result.positions = await a.evaluate(() => scriptedPositions());

  // Resuming, against scripted servers: verdicts, repeats, tokens, the fallback to JOIN,
  // publishes held and sent again, and their bound.
  mark("resume, scripted");
  result.scriptedResume = await a.evaluate(() => scriptedResume());
  result.scriptedBound = await a.evaluate(() => scriptedBound());

  // Resuming against the real server, in each codec: the connection is cut (the server
  // drops it without a close frame) while messages are sent to the room.
  mark("resume: recovered");
  result.resumeRecovered = {
    json: await a.evaluate(() => resumeRecovered("json")),
    msgpack: await b.evaluate(() => resumeRecovered("msgpack")),
  };
  mark("resume: not recovered");
  result.resumeNotRecovered = {
    json: await a.evaluate(() => resumeNotRecovered("json")),
    msgpack: await b.evaluate(() => resumeNotRecovered("msgpack")),
  };
  mark("a publish whose answer was lost");
  result.publishOnce = await a.evaluate(() => publishOnce());
} catch (error) {
  result.failure = String(error?.stack ?? error);
} finally {
  mark("closing the browser");
  await context.close();
  await rm(userDataDir, { recursive: true, force: true });
  clearTimeout(watchdog);
  mark("done");
}
// Exit at once: playwright-core leaves handles that would keep node alive a while.
process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
