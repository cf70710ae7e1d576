#!/usr/bin/env node
/*
 * Runs the official Pomelo browser client in headless Chromium against a Pomelo connector.
 *
 * usage: node tests/browser/run.js HOST PORT
 *
 * Serves index.html and test.js from this folder, and js/lib/ from the npm pomelo package's
 * template web-server (node_modules/pomelo/template/web-server/public/js/lib/, as the template's
 * own index.html loads it), on 127.0.0.1 at a free port; launches Debian's /usr/bin/chromium
 * (CHROMIUM overrides) through playwright-core with a fresh, empty user data dir; opens the page
 * with the connector's host and port in the query string; waits for the page's window.__results
 * (BROWSER_TEST_TIMEOUT ms, default 25000); prints one line of JSON and exits 0 only if every step
 * passed. On failure it saves a screenshot of the page and the JSON beside it in
 * $BROWSER_ARTIFACTS (default tests/browser/artifacts/) and puts their paths in the JSON.
 */
'use strict';

const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');

const HERE = __dirname;
const CLIENT_LIB = path.join(HERE, 'node_modules', 'pomelo', 'template', 'web-server', 'public', 'js', 'lib');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PAGE_TIMEOUT = Number(process.env.BROWSER_TEST_TIMEOUT || 25000);
const ARTIFACTS = process.env.BROWSER_ARTIFACTS || path.join(HERE, 'artifacts');
// The flags for Chromium on a machine with no internet (the user data dir is a new temp dir).
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const started = Date.now();
let printed = false;
function emit(result, code) {
  if (printed) return;
  printed = true;
  result.elapsedMs = Date.now() - started;
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(code));
}

// The whole run is bounded even if Chromium hangs.
const watchdog = setTimeout(() => {
  emit({ok: false, error: `run.js gave up after ${PAGE_TIMEOUT + 30000} ms`}, 1);
}, PAGE_TIMEOUT + 30000);
watchdog.unref();

const TYPES = {'.html': 'text/html; charset=utf-8', '.js': 'application/javascript; charset=utf-8',
               '.css': 'text/css', '.png': 'image/png', '.json': 'application/json'};

// Only these files: the page, its script, and the client library directory.
function resolvePath(urlPath) {
  const p = decodeURIComponent(urlPath.split('?')[0]);
  if (p === '/' || p === '/index.html') return path.join(HERE, 'index.html');
  if (p === '/test.js') return path.join(HERE, 'test.js');
  if (p.startsWith('/js/lib/')) {
    const file = path.normalize(path.join(CLIENT_LIB, p.slice('/js/lib/'.length)));
    if (file.startsWith(CLIENT_LIB + path.sep)) return file;
  }
  return null;
}

function serve() {
  const served = [];
  const server = http.createServer((req, res) => {
    if (req.url === '/favicon.ico') {
      res.writeHead(204);
      res.end();
      return;
    }
    const file = resolvePath(req.url);
    fs.readFile(file || '', (err, data) => {
      if (!file || err) {
        served.push(`404 ${req.url}`);
        res.writeHead(404, {'Content-Type': 'text/plain'});
        res.end('not found');
        return;
      }
      served.push(`200 ${req.url}`);
      res.writeHead(200, {'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream',
                          'Cache-Control': 'no-store'});
      res.end(data);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({server, served}));
  });
}

async function main() {
  const [host, port] = process.argv.slice(2);
  if (!host || !port) {
    process.stderr.write('usage: node run.js HOST PORT\n');
    process.exit(2);
  }
  const result = {ok: false, target: `${host}:${port}`};
  for (const [what, p] of [['the Pomelo browser client (npm install in tests/browser)', path.join(CLIENT_LIB, 'build', 'build.js')],
                           ['Chromium', CHROMIUM]]) {
    if (!fs.existsSync(p)) {
      emit({...result, error: `${what} is missing: ${p}; run tests/browser/install.sh`}, 1);
      return;
    }
  }
  let chromium;
  try {
    ({chromium} = require('playwright-core'));
  } catch (e) {
    emit({...result, error: `playwright-core is missing (run tests/browser/install.sh): ${e.message}`}, 1);
    return;
  }
  result.playwright = require('playwright-core/package.json').version;
  result.client = 'pomelo ' + require('pomelo/package.json').version + ' template/web-server/public/js/lib/build/build.js';

  const {server, served} = await serve();
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pomelo-browser-profile-'));
  const consoleLines = [];
  let context = null;
  let page = null;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_FLAGS,
      timeout: 20000,
      viewport: {width: 1000, height: 700},
    });
    result.chromium = context.browser() ? context.browser().version() : undefined;
    page = context.pages()[0] || await context.newPage();
    page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
    const url = `http://127.0.0.1:${server.address().port}/index.html` +
      `?host=${encodeURIComponent(host)}&port=${encodeURIComponent(port)}`;
    await page.goto(url, {waitUntil: 'load', timeout: 10000});
    try {
      await page.waitForFunction(() => window.__results && window.__results.done, null,
                                 {timeout: PAGE_TIMEOUT, polling: 100});
    } catch (e) {
      result.error = `the page did not finish in ${PAGE_TIMEOUT} ms`;
    }
    const pageResults = await page.evaluate(() => window.__results || null);
    if (pageResults === null) {
      result.error = result.error || 'the page has no window.__results';
    } else {
      Object.assign(result, pageResults, {ok: pageResults.ok === true && pageResults.done === true && !result.error});
    }
  } catch (e) {
    result.ok = false;
    result.error = `${result.error ? result.error + '; ' : ''}${e.message.split('\n')[0]}`;
  }
  result.console = consoleLines.slice(-40);
  if (!result.ok) {
    result.served = served;
    try {
      fs.mkdirSync(ARTIFACTS, {recursive: true});
      const base = path.join(ARTIFACTS, `browser-${host}-${port}-${new Date().toISOString().replace(/[:.]/g, '-')}`);
      if (page) {
        await page.screenshot({path: base + '.png', fullPage: true, timeout: 5000});
        result.screenshot = base + '.png';
      }
      fs.writeFileSync(base + '.json', JSON.stringify(result, null, 2) + '\n');
      result.resultFile = base + '.json';
    } catch (e) {
      result.screenshotError = e.message.split('\n')[0];
    }
  }
  if (context) await context.close().catch(() => {});
  server.close();
  fs.rmSync(userDataDir, {recursive: true, force: true});
  emit(result, result.ok ? 0 : 1);
}

main().catch((e) => emit({ok: false, error: `run.js: ${e.stack || e}`}, 1));
