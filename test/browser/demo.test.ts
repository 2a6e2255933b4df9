/**
 * The demo page in a real browser: Debian's Chromium (headless, driven by playwright-core, never
 * a downloaded browser) loads the page from the local stack (`npm start`), goes online with the
 * native RTCPeerConnection, dials a CLI endpoint, chats both ways and sends a file that the CLI
 * verifies with SHA-256, and receives one from a CLI sender. The second test forces the browser through our relay
 * (iceTransportPolicy 'relay'): Chromium's own TURN client, libwebrtc, is the referee for the
 * relay. The third runs the CLI on the native backend (node-datachannel, HOMELINK_BACKEND): the
 * page's Chromium offers to libdatachannel and a libdatachannel sender offers to Chromium.
 * Screenshots go to test-output/.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleBrowserApp, LIBRARY_ENTRY } from '../../web/bundle.js';
import { ROOT, runCli, spawnCli, startStack, type RunningStack } from '../cli/support.js';

const CHROMIUM = '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) console.log('skipped: needs chromium');

/** Bound on each UI step that waits for the network. */
const STEP_TIMEOUT_MS = 45_000;
const OUTPUT = join(ROOT, 'test-output');

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function metric(st: RunningStack, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${st.ports.metrics}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.split(' ').at(-1)) : NaN;
}

describe('the browser bundle', () => {
  it('holds the client library and the page with nothing Node-only in it', async () => {
    for (const entry of [LIBRARY_ENTRY, undefined]) {
      const js = await bundleBrowserApp(entry);
      expect(js.length).toBeGreaterThan(10_000);
      expect(js).not.toMatch(/\bprocess\.(env|nextTick|versions)|\brequire\(["']|from ["']node:/);
      // werift's code or an import of it (the word itself may stand in a doc comment esbuild keeps).
      expect(js).not.toMatch(/node_modules\/werift|["']werift["']|node-datachannel["']/);
    }
  });
});

describe.skipIf(!hasChromium)('demo page in Chromium against a CLI endpoint', () => {
  let st: RunningStack;
  let ctx: BrowserContext;
  let userData: string;
  let work: string;

  beforeAll(async () => {
    st = await startStack();
    work = await mkdtemp(join(tmpdir(), 'homelink-browser-'));
    userData = await mkdtemp(join(tmpdir(), 'homelink-chromium-'));
    await mkdir(OUTPUT, { recursive: true });
    ctx = await chromium.launchPersistentContext(userData, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--disable-quic',
        // The local stack is loopback-only; let WebRTC gather on 127.0.0.1 (the page announces only those).
        '--allow-loopback-in-peer-connection',
      ],
    });
  });
  afterAll(async () => {
    await ctx?.close();
    if (userData) await rm(userData, { recursive: true, force: true });
    if (work) await rm(work, { recursive: true, force: true });
    await st?.dispose();
  });

  async function goOnline(me: string, relay: boolean): Promise<Page> {
    const page = await ctx.newPage();
    await page.goto(`http://127.0.0.1:${st.ports.web}/?me=${me}&peer=hub-${me}${relay ? '&relay=1' : ''}`);
    await page.click('#online');
    await page.waitForFunction(() => document.getElementById('status')!.textContent!.startsWith('online as'), null, { timeout: STEP_TIMEOUT_MS });
    return page;
  }

  /**
   * `whileOpen` runs with the listener's pid once the page's link to it is open (the native test
   * checks there which WebRTC stack the CLI process loaded).
   */
  async function chatAndFile(me: string, relay: boolean, whileOpen?: (listenerPid: number) => Promise<void>): Promise<Page> {
    const hub = `hub-${me}`;
    const listener = spawnCli(['listen', '--as', hub, '--dir', st.dir], { stdin: 'keep-open' });
    const receiver = spawnCli(['receive', '--as', `files-${me}`, '--out', join(work, me), '--dir', st.dir]);
    try {
      await listener.waitForStderr('waiting for a peer');
      await receiver.waitForStderr('waiting for a sender');
      const page = await goOnline(me, relay);

      // Chat: the page dials the CLI; each side's message reaches the other.
      listener.proc.stdin!.write('hello from the CLI\n');
      await page.click('#connect');
      await page.waitForFunction(() => document.getElementById('log')!.textContent!.includes('hello from the CLI'), null, { timeout: STEP_TIMEOUT_MS });
      expect(await page.textContent('#path-kind')).toBe(relay ? 'relay' : 'direct');
      await whileOpen?.(listener.proc.pid!);
      await page.fill('#msg', 'hello from the browser');
      await page.press('#msg', 'Enter');
      const deadline = Date.now() + STEP_TIMEOUT_MS;
      while (!listener.stdout().includes('hello from the browser\n') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      expect(listener.stdout()).toBe('hello from the browser\n');

      // File: the page sends to a CLI receiver, which checks the SHA-256.
      const data = randomBytes(300_000);
      await page.fill('#file-peer', `files-${me}`);
      await page.setInputFiles('#file', { name: 'from-browser.bin', mimeType: 'application/octet-stream', buffer: data });
      await page.click('#send-file');
      await page.waitForFunction(() => /verified by|failed/.test(document.getElementById('file-status')!.textContent!), null, { timeout: STEP_TIMEOUT_MS });
      expect(await page.textContent('#file-status')).toContain(`SHA-256 ${sha256(data)} verified by files-${me}`);
      const r = await receiver.done();
      expect(r.code, r.stderr).toBe(0);
      expect(sha256(await readFile(join(work, me, 'from-browser.bin')))).toBe(sha256(data));

      // And the other way: a CLI sender dials the page, which checks the SHA-256 and offers a download.
      const back = randomBytes(150_000);
      const backFile = join(work, `to-${me}.bin`);
      await writeFile(backFile, back);
      const sent = await runCli(['send', me, backFile, '--as', `sender-${me}`, '--dir', st.dir, ...(relay ? ['--relay'] : [])]);
      expect(sent.code, sent.stderr).toBe(0);
      expect(sent.stderr).toContain(`SHA-256 ${sha256(back)} verified by ${me}`);
      expect(await page.textContent('#file-status')).toContain(`received to-${me}.bin (146.5 KiB), SHA-256 ${sha256(back)} verified`);

      // End of the chat: the CLI's stdin ends, the page disconnects, the CLI exits cleanly.
      listener.proc.stdin!.end();
      await page.waitForFunction(() => document.getElementById('log')!.textContent!.includes('finished sending'), null, { timeout: STEP_TIMEOUT_MS });
      await page.screenshot({ path: join(OUTPUT, `browser-${relay ? 'relay' : 'direct'}.png`), fullPage: true });
      await page.click('#disconnect');
      const l = await listener.done();
      expect(l.code, l.stderr).toBe(0);
      // The CLI side is never forced through the relay: it must still report the page's relayed
      // side as a relayed path (the page's relayed address may first reach it as peer-reflexive).
      // Unforced, the last path it reported must be direct: libjuice (the node-datachannel CLI,
      // the controlled side) can open on its relayed pair, whose check answered first, and move
      // to Chromium's nominated host pair tens of ms later; the link reports that move (it failed
      // here in about 4 of 10 runs while it did not).
      const cliPath = [...l.stderr.matchAll(/(?:open|path changed|connectivity back): (direct|via relay)/g)].at(-1)?.[1];
      expect(cliPath, l.stderr).toBe(relay ? 'via relay' : 'direct');
      return page;
    } finally {
      listener.kill();
      receiver.kill();
    }
  }

  it('connects to a CLI endpoint directly, chats both ways and sends a verified file', async () => {
    const page = await chatAndFile('b1', false);
    await page.close();
  });

  it('goes through our relay when forced (Chromium TURN client against our relay)', async () => {
    const allocationsBefore = await metric(st, 'homelink_relay_allocations_created_total');
    const toPeerBefore = await metric(st, 'homelink_relay_packets_total{direction="to_peer"}');
    const page = await chatAndFile('b2', true);
    expect(await metric(st, 'homelink_relay_allocations_created_total')).toBeGreaterThan(allocationsBefore);
    expect(await metric(st, 'homelink_relay_packets_total{direction="to_peer"}')).toBeGreaterThan(toPeerBefore);
    await page.close();
  });

  it('interoperates with a CLI endpoint on node-datachannel both ways (Chromium offers to it, it offers to Chromium)', async () => {
    const nativeMapped = async (pid: number): Promise<boolean> => (await readFile(`/proc/${pid}/maps`, 'utf8')).includes('node_datachannel.node');
    const before = process.env['HOMELINK_BACKEND'];
    // The CLI children inherit it (test/cli/support.ts passes the environment on).
    process.env['HOMELINK_BACKEND'] = 'node-datachannel';
    try {
      const page = await chatAndFile('b3', false, async (pid) => {
        // The listener carrying the page's link runs libdatachannel, not werift.
        expect(await nativeMapped(pid)).toBe(true);
      });
      await page.close();
    } finally {
      if (before === undefined) delete process.env['HOMELINK_BACKEND'];
      else process.env['HOMELINK_BACKEND'] = before;
    }
  });
});
