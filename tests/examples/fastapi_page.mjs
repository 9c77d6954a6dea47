// Opens the page of examples/fastapi in headless Chromium, waits until it has joined
// the announcements room (through eventbus.js, imported from the bus's own port),
// announces through the page's form (POST /announce to the app), and waits until the
// announcement comes back through the bus. Prints what the page saw as one JSON
// object on stdout; test_fastapi.py starts the app and asserts.
//
//   node fastapi_page.mjs http://127.0.0.1:PORT/
//       (env CHROMIUM: the browser, default /usr/bin/chromium)
//
// playwright-core comes from tests/browser/node_modules (npm ci there).

import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(HERE, "..", "browser", "package.json"));
const { chromium } = require("playwright-core");

const [base] = process.argv.slice(2);
if (!base) throw new Error("usage: node fastapi_page.mjs PAGE_URL");
const result = { console: [] };
const watchdog = setTimeout(() => {
  console.error(`fastapi_page.mjs: gave up after 30 s; so far: ${JSON.stringify(result)}`);
  process.exit(3);
}, 30_000);

const userDataDir = await mkdtemp(join(tmpdir(), "eventbus-fastapi-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await context.newPage();
  page.on("console", (msg) => result.console.push(`${msg.type()}: ${msg.text()}`));
  page.on("pageerror", (error) => result.console.push(`pageerror: ${error.message}`));
  await page.goto(base);
  await page.waitForFunction(() => window.announcements?.joined === true, null,
                             { timeout: 10_000 });
  await page.fill("#text", "hello from the page");
  await page.press("#text", "Enter");
  await page.waitForFunction(() => window.announcements.received.length > 0, null,
                             { timeout: 10_000 });
  result.received = await page.evaluate(() => window.announcements.received);
  result.shown = await page.$$eval("#announcements li", (items) => items.map((li) => li.textContent));
  result.status = await page.textContent("#status");
} catch (error) {
  result.failure = String(error);
} finally {
  await context.close();
  await rm(userDataDir, { recursive: true, force: true });
  clearTimeout(watchdog);
}
console.log(JSON.stringify(result));
