// End-to-end test of pycached's admin page (server/admin/index.html) in a real browser:
// playwright-core drives Debian's /usr/bin/chromium (no browser is downloaded). Run by
// tests/e2e/test_admin_page.py against a real pycached, or by hand against any server:
//
//   PCC_ADMIN_URL=http://127.0.0.1:8700 PCC_ADMIN_TOKEN=... PCC_ADMIN_PREFIX=/srv/app/old/ \
//   PCC_SCREENSHOT=/tmp/admin.png node test_admin_page.mjs
//
// PCC_ADMIN_PREFIX names a path prefix the test filters by and then INVALIDATES (its entries
// are removed from the server). PCC_LOOKUP_HIT and PCC_LOOKUP_MISS are /v1/code URLs (path and
// query) of a stored entry and of one not stored: the test's known traffic, after which it
// checks the hit ratio and that the page updates by itself. PCC_ADMIN_MODE=open: the server has
// no tokens (PCC_ADMIN_TOKEN and PCC_ADMIN_PREFIX unused): the page must not ask for one.
// Exits 0 on success, 1 with a message on the first failure.
import { chromium } from "playwright-core";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === "") fail(`environment variable ${name} is required`);
  return v;
};
function fail(message) {
  console.error(`admin page test FAILED: ${message}`);
  process.exit(1);
}

const BASE = env("PCC_ADMIN_URL").replace(/\/+$/, "");
const OPEN = process.env.PCC_ADMIN_MODE === "open";
const TOKEN = OPEN ? null : env("PCC_ADMIN_TOKEN");
const PREFIX = OPEN ? null : env("PCC_ADMIN_PREFIX");
const LOOKUP_HIT = env("PCC_LOOKUP_HIT");
const LOOKUP_MISS = env("PCC_LOOKUP_MISS");
const REFRESH_WAIT_MS = 15000;  // the page refreshes every 5 s: three chances
const SCREENSHOT = env("PCC_SCREENSHOT");
const CHROMIUM = env("PCC_CHROMIUM", "/usr/bin/chromium");
const STEP_MS = 15000;      // any one wait in the page
const OVERALL_MS = 120000;  // the whole run

const watchdog = setTimeout(() => fail(`no result after ${OVERALL_MS / 1000} s`), OVERALL_MS);

// The admin API as seen from Node, to check what the page shows.
async function api(method, path, okStatus = [200]) {
  const resp = await fetch(BASE + path, {
    method, headers: TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {},
    signal: AbortSignal.timeout(STEP_MS),
  });
  const body = await resp.json();
  if (!okStatus.includes(resp.status)) throw new Error(`${method} ${path}: ${resp.status} ${JSON.stringify(body)}`);
  return body;
}
// Lookups as a client makes them: hits of the stored entry, then misses of the other.
async function traffic(hits, misses) {
  for (let i = 0; i < hits; i++) await api("GET", LOOKUP_HIT);
  for (let i = 0; i < misses; i++) await api("GET", LOOKUP_MISS, [404]);
}
async function countEntries(prefix) {  // follows next_cursor, bounded
  let n = 0, cursor = null;
  for (let pages = 0; pages < 1000; pages++) {
    const q = new URLSearchParams({ prefix, limit: "1000" });
    if (cursor) q.set("cursor", cursor);
    const r = await api("GET", `/v1/admin/entries?${q}`);
    n += r.entries.length;
    cursor = r.next_cursor;
    if (!cursor) return n;
  }
  throw new Error("more than 1000 pages of entries");
}
function check(cond, message) {
  if (!cond) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  timeout: 30000,
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
}).catch((e) => fail(`cannot launch ${CHROMIUM}: ${e.message}`));

const problems = [];  // things seen by listeners, reported at the end
let expectConfirm = null;  // the start of the confirmation text the next dialog must show
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(STEP_MS);
page.on("pageerror", (e) => problems.push(`uncaught error in the page: ${e.message}`));
page.on("console", (m) => {  // the browser logs the deliberate 401 below; anything else counts
  if (m.type() === "error" && !/status of 401/.test(m.text())) problems.push(`console error: ${m.text()}`);
});
page.on("request", (r) => {
  if (!r.url().startsWith(BASE + "/")) problems.push(`request outside the server: ${r.url()}`);
});
page.on("dialog", async (d) => {
  if (expectConfirm && d.type() === "confirm" && d.message().startsWith(expectConfirm)) {
    expectConfirm = null;
    await d.accept();
  } else {
    problems.push(`unexpected ${d.type()} dialog: ${d.message()}`);
    await d.dismiss();
  }
});

const text = async (sel) => (await page.textContent(sel)).trim();
// Clicks and waits for the action it starts to finish; returns the status kind and text.
async function act(sel) {
  await page.click(sel);
  await page.waitForFunction(() => document.getElementById("status").dataset.kind !== "busy");
  return { kind: await page.getAttribute("#status", "data-kind"), text: await text("#status") };
}
async function expectOk(sel, what) {
  const s = await act(sel);
  check(s.kind === "ok", `${what}: the status area says ${s.kind}: ${JSON.stringify(s.text)}`);
  return s;
}
async function shownPaths() {
  return page.$$eval("#entries tbody tr:not(.none) td.path", (tds) => tds.map((td) => td.textContent));
}
async function listAll() {  // clicks "next page" until there is none; returns every path shown
  for (let pages = 0; pages < 100 && !(await page.isDisabled("#next-page")); pages++)
    await expectOk("#next-page", "next page");
  return shownPaths();
}

// What the page shows of the hit ratio, compiler health and the rates agrees with the API, and
// after more traffic the page shows it by itself (no click), with a newer "updated" time.
async function checkLiveFigures() {
  const stats = await api("GET", "/v1/admin/stats");
  const ratio = stats.total.hit_ratio;
  check(typeof ratio === "number", `no hit ratio after traffic: ${JSON.stringify(stats.total)}`);
  check(await page.getAttribute("#stat-hit-ratio", "data-value") === String(ratio) &&
        await text("#stat-hit-ratio") === `${(100 * ratio).toFixed(1)} %`,
        `#stat-hit-ratio shows ${await text("#stat-hit-ratio")}, the API says ${ratio}`);
  const backends = stats.compilers.backends;
  const sum = (k) => backends.reduce((n, b) => n + b[k], 0);
  check(await page.getAttribute("#stat-workers", "data-workers") === String(sum("workers")) &&
        await page.getAttribute("#stat-workers", "data-alive") === String(sum("alive")),
        `#stat-workers shows ${await text("#stat-workers")}, the API ${JSON.stringify(backends)}`);
  check(sum("workers") >= 1 && sum("alive") <= sum("workers"), "compiler health: no workers");
  check(await text("#stat-restarts") === String(sum("restarts")), "#stat-restarts differs");
  check(/^\d+ \/ \d+$/.test(await text("#stat-compile-trouble")), "no compile timeouts / failures");

  const at = await page.getAttribute("#updated", "data-at");
  const hits = stats.total.hits + 5;
  await traffic(5, 0);
  await page.waitForFunction((want) => document.getElementById("stat-hits").dataset.value === want,
                             String(hits), { timeout: REFRESH_WAIT_MS })
    .catch(() => { throw new Error(`#stat-hits did not reach ${hits} by itself in ${REFRESH_WAIT_MS} ms`); });
  check(await page.getAttribute("#updated", "data-at") !== at, "#updated did not change");
  check(/updated \d/.test(await text("#updated")), `#updated shows ${await text("#updated")}`);
  const rate = Number(await page.getAttribute("#stat-rate-hits", "data-value"));
  check(rate > 0, `hits/s is ${rate} after 5 hits between two samples`);
}

try {
  const resp = await page.goto(`${BASE}/admin`, { waitUntil: "load" });
  check(resp && resp.status() === 200, `GET /admin answered ${resp && resp.status()}`);
  check((resp.headers()["content-type"] || "").startsWith("text/html"), "GET /admin is not text/html");
  await page.waitForFunction(() => document.getElementById("status").dataset.kind !== "busy");

  if (OPEN) {
    // No token on the server: no prompt, the figures load at once.
    await page.waitForFunction(() => document.body.dataset.loaded);
    check(await page.isHidden("#token-controls"), "the page asks for a token the server does not want");
    check(await page.getAttribute("#status", "data-kind") === "ok", `status: ${await text("#status")}`);
    check(/no tokens/.test(await text("#auth-note")), "the page does not say the server is open");
    await traffic(3, 1);
    await page.waitForFunction(() => document.getElementById("stat-hit-ratio").dataset.value === "0.75",
                               null, { timeout: REFRESH_WAIT_MS })
      .catch(async () => { throw new Error(`#stat-hit-ratio shows ${await text("#stat-hit-ratio")}, want 75.0 % after 3 hits and 1 miss`); });
    await checkLiveFigures();
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    check(problems.length === 0, problems.join("; "));
    console.log(`admin page test (open server) passed, screenshot ${SCREENSHOT}`);
    clearTimeout(watchdog);
    await browser.close();
    process.exit(0);
  }

  // A server with tokens: the page asks for one, and shows nothing until the server accepts it.
  check(await page.isVisible("#token"), "no token prompt on a server with tokens");
  check(/token/.test(await text("#status")), `the status does not ask for a token: ${await text("#status")}`);

  // A wrong token must be reported in the status area, and unlock nothing.
  await page.fill("#token", `not-a-token-${process.pid}`);
  const bad = await act("#save-token");
  check(bad.kind === "error" && bad.text.includes("401"),
        `a wrong token should show a 401 in #status, it shows ${bad.kind}: ${JSON.stringify(bad.text)}`);
  check(await page.evaluate(() => Object.values(sessionStorage).length === 0), "a rejected token was kept");
  check(await text("#stat-entries") === "–", "figures are shown after a rejected token");

  await traffic(3, 1);  // known traffic: the ratio must read 75.0 %
  await page.fill("#token", TOKEN);
  await expectOk("#save-token", "loading with the admin token");
  check(await page.inputValue("#token") === "", "the token field should be cleared after use");
  check(await page.evaluate(() => Object.values(sessionStorage).length === 1), "the token is not in sessionStorage");

  const stats = await api("GET", "/v1/admin/stats");
  const before = stats.total.entries;
  check(await text("#stat-entries") === String(before),
        `#stat-entries shows ${await text("#stat-entries")}, /v1/admin/stats says ${before}`);
  check(await page.getAttribute("#stat-hits", "data-value") === String(stats.total.hits),
        "#stat-hits differs from the API");
  // one figure, one meaning: the stored code is the store's payload bytes, the sum of the magics'
  check(await page.getAttribute("#stat-bytes", "data-value") === String(stats.store.bytes) &&
        stats.store.bytes === stats.total.bytes,
        `#stat-bytes shows ${await page.getAttribute("#stat-bytes", "data-value")}, the store has ` +
        `${stats.store.bytes}, the magics ${stats.total.bytes}`);
  check(await page.getAttribute("#stat-store", "data-value") === String(stats.store.used),
        "#stat-store differs from the store's used pages");
  check(await text("#stat-evictions") === String(stats.store.evictions), "#stat-evictions differs");
  check(await text("#stat-profiles") === String(stats.store.profiles), "#stat-profiles differs");
  check(/\//.test(await text("#stat-hit-latency")) || (await text("#stat-hit-latency")) === "no samples",
        "no hit latency shown");
  check(await page.$$eval("#backends tbody tr", (r) => r.length) >= 1, "no backend rows");
  check(stats.total.hit_ratio === 0.75 && await text("#stat-hit-ratio") === "75.0 %",
        `after 3 hits and 1 miss the API says ${stats.total.hit_ratio}, the page ${await text("#stat-hit-ratio")}`);
  await checkLiveFigures();
  check(await page.$$eval("#entries img, #entries script", (e) => e.length) === 0, "markup from a path was rendered");

  // Filter by the prefix: every row is under it and the page lists as many as the API.
  const underPrefix = await countEntries(PREFIX);
  check(underPrefix > 0, `no entries under ${PREFIX} to test with`);
  await page.fill("#filter-prefix", PREFIX);
  await expectOk("#apply-filter", "filtering");
  const filtered = await listAll();
  check(filtered.every((p) => p.startsWith(PREFIX)), `a filtered row is not under ${PREFIX}: ${filtered}`);
  check(filtered.length === underPrefix, `the filtered list shows ${filtered.length} entries, the API has ${underPrefix}`);

  // Invalidate the prefix, accepting the confirmation.
  await page.fill("#invalidate-prefix", PREFIX);
  expectConfirm = "Invalidate";
  const done = await expectOk("#invalidate", "invalidation");
  check(expectConfirm === null, "no confirmation was asked before invalidating");
  check(await text("#removed") === String(underPrefix), `#removed shows ${await text("#removed")}, expected ${underPrefix}`);
  check(done.text.includes(`removed ${underPrefix}`), `the status does not say what was removed: ${done.text}`);
  const after = (await api("GET", "/v1/admin/stats")).total.entries;
  check(after === before - underPrefix, `the API has ${after} entries after removing ${underPrefix} of ${before}`);
  check(await text("#stat-entries") === String(after), `#stat-entries shows ${await text("#stat-entries")} after, API ${after}`);
  check((await shownPaths()).length === 0, "the filtered list still shows entries after the invalidation");
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  // The rest is still listed without the filter.
  await page.fill("#filter-prefix", "");
  await expectOk("#apply-filter", "listing everything");
  const rest = await listAll();
  check(rest.length === after, `the unfiltered list shows ${rest.length} entries, the API has ${after}`);
  check(rest.every((p) => !p.startsWith(PREFIX)), "an invalidated entry is still listed");

  check(problems.length === 0, problems.join("; "));
  console.log(`admin page test passed: ${before} entries, ${underPrefix} invalidated under ${PREFIX}, screenshot ${SCREENSHOT}`);
} catch (e) {
  const status = await page.textContent("#status", { timeout: 2000 }).catch(() => "?");
  await page.screenshot({ path: `${SCREENSHOT}.failed.png`, fullPage: true, timeout: 5000 }).catch(() => {});
  console.error(`page status: ${status}; earlier problems: ${problems.join("; ") || "none"}`);
  await browser.close().catch(() => {});
  fail(e.message);
}
clearTimeout(watchdog);
await browser.close();
