// Debian's Chromium through playwright-core (never a downloaded browser), and a page wrapper
// that records every page error, console error and failed worker so a test can fail on them.

import { chromium } from "playwright-core";

export const CHROMIUM_ARGS = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
  "--disable-dev-shm-usage",
];

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: CHROMIUM_ARGS,
    // playwright-core adds --headless itself unless told not to; the flag above is the one we want.
    headless: false,
  });
}

/**
 * Chromium logs every HTTP error response as a console error. The UI answers some on purpose
 * (a 409 it turns into a conflict notice, the plugin API's 404 while it does not exist): those
 * are expected when `allowHttpError(status, url)` says so; any other console error is a problem.
 */
const HTTP_ERROR = /^Failed to load resource: the server responded with a status of (\d+)/;

/** A new context + page at 1440x900 whose problems land in `problems`. */
export async function newPage(browser, problems, label, allowHttpError = () => false) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on("pageerror", (err) => problems.push(`${label}: page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const http = msg.text().match(HTTP_ERROR);
    if (http && allowHttpError(Number(http[1]), msg.location().url)) return;
    problems.push(`${label}: console error: ${msg.text()} (${msg.location().url})`);
  });
  const requests = [];
  page.on("request", (req) => requests.push(req.url()));
  return { context, page, requests };
}
