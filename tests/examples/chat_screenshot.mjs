// Opens the chat page of examples/chat in headless Chromium as two people, who
// exchange messages (and ask the bot for a roll), then saves a screenshot of the
// first person's window. Prints what each page shows as one JSON object on stdout;
// test_chat_page.py starts the example and asserts.
//
//   node chat_screenshot.mjs http://127.0.0.1:PORT/ OUT.png
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

const [base, out] = process.argv.slice(2);
if (!base || !out) throw new Error("usage: node chat_screenshot.mjs PAGE_URL OUT.png");
const result = { console: [] };
const watchdog = setTimeout(() => {
  console.error(`chat_screenshot.mjs: gave up after 40 s; so far: ${JSON.stringify(result)}`);
  process.exit(3);
}, 40_000);

const userDataDir = await mkdtemp(join(tmpdir(), "eventbus-chat-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1120, height: 700 },
  deviceScaleFactor: 1,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

const texts = (page) => page.$$eval("#messages li", (items) => items.map((li) => {
  if (li.classList.contains("notice")) return `* ${li.textContent}`;
  return `${li.dataset.nick}: ${li.querySelector(".text").textContent}`;
}));

try {
  const open = async (nick) => {
    const page = await context.newPage();
    page.on("console", (msg) => result.console.push(`${nick} ${msg.type()}: ${msg.text()}`));
    page.on("pageerror", (error) => result.console.push(`${nick} pageerror: ${error.message}`));
    await page.goto(`${base}?nick=${nick}&room=lobby`);
    await page.waitForFunction(() => window.chat?.ready === true, null, { timeout: 10_000 });
    return page;
  };
  const say = async (page, text) => {
    await page.fill("#text", text);
    await page.press("#text", "Enter");
  };
  const until = (page, fn, arg) => page.waitForFunction(fn, arg, { timeout: 8000 });
  const count = (text) => [...document.querySelectorAll("#messages .text")]
    .filter((el) => el.textContent.includes(text)).length;

  const ada = await open("ada");
  const bob = await open("bob");
  // The bot greets each newcomer; ada sees bob join.
  await until(ada, () => document.querySelector("#members").textContent.includes("bob"));
  await say(ada, "Hi bob! Did the release go out?");
  await until(bob, count, "Did the release go out?");
  await say(bob, "It did, ten minutes ago. Dashboards are all green.");
  await until(ada, count, "Dashboards are all green");
  await say(ada, "Great! Lunch is on whoever rolls lowest.");
  await say(ada, "!roll");
  await until(ada, count, "ada rolled a");
  await say(bob, "!roll");
  await until(bob, count, "bob rolled a");
  await until(ada, count, "bob rolled a");
  await ada.waitForTimeout(200);

  result.ada = await texts(ada);
  result.bob = await texts(bob);
  result.membersAda = await ada.$$eval("#members li", (items) => items.map((li) => li.textContent));
  result.roomsAda = await ada.$$eval("#rooms button", (items) => items.map((b) => b.textContent));
  result.status = await ada.textContent("#status");
  await ada.bringToFront();
  await ada.screenshot({ path: out });
  result.screenshot = out;
} catch (error) {
  result.failure = String(error?.stack ?? error);
} finally {
  await context.close();
  await rm(userDataDir, { recursive: true, force: true });
  clearTimeout(watchdog);
}
process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
