/**
 * The service's own log output under `wrangler dev` (what `npm start` runs): refused room joins
 * (a foreign session, an unknown one, a malformed id) are closed with 1008 and log no uncaught
 * error. A socket accepted and closed in the Worker itself used to log
 * `Uncaught Error: Network connection lost.` once per refusal (issue 9 item 6); plain Miniflare
 * does not print it, wrangler's dev stack does, so this suite runs the real `wrangler dev`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevIssuer, devWorkerVars, formatDevVars, type DevIssuer } from '../../dev/issuer.js';
import { freePort } from '../support/ports.js';
import { DEFAULT_TEST_TURN_SECRET } from '../support/signaling.js';
import { connect, online } from './helpers.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** wrangler dev is ready in about 1.5 s alone; generous for a loaded machine. */
const READY_MS = 45_000;
/** Time for a late log line to show up after the last refusal. */
const SETTLE_MS = 1500;

let dir: string;
let child: ChildProcess | null = null;
let output = '';
let url: string;
let issuer: DevIssuer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'homelink-wrangler-logs-'));
  issuer = await createDevIssuer();
  await writeFile(join(dir, 'env'), formatDevVars(devWorkerVars(issuer, { turnSecret: DEFAULT_TEST_TURN_SECRET, relays: [], offlineWaitMs: 1000 })));
  const [port, inspector] = [await freePort(), await freePort()];
  url = `http://127.0.0.1:${port}`;
  const wrangler = join(ROOT, 'node_modules', '.bin', 'wrangler');
  child = spawn(
    wrangler,
    ['dev', '--ip', '127.0.0.1', '--port', String(port), '--inspector-port', String(inspector), '--persist-to', join(dir, 'state'), '--env-file', join(dir, 'env'), '--show-interactive-dev-session=false'],
    {
      cwd: ROOT,
      detached: true,
      env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CLOUDFLARE_CF_FETCH_ENABLED: 'false', WRANGLER_HIDE_BANNER: 'true', NO_COLOR: '1' },
    },
  );
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const end = Date.now() + READY_MS;
  while (!/Ready on/.test(output)) {
    if (Date.now() > end || child.exitCode !== null) throw new Error(`wrangler dev did not start:\n${output.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}, READY_MS + 5000);

afterAll(async () => {
  if (child?.pid !== undefined && child.exitCode === null) {
    const exited = new Promise((r) => child!.once('exit', r));
    // Its own process group (detached): wrangler and the workerd it started.
    process.kill(-child.pid, 'SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid, 'SIGKILL');
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('refused room joins under wrangler dev', () => {
  it('are closed with 1008 and log no uncaught error', async () => {
    const at = await issuer.accessToken({ sub: 'l-app', homes: ['home-l'] });
    const ht = await issuer.accessToken({ sub: 'l-hub', homes: ['home-l'] });
    const xt = await issuer.accessToken({ sub: 'l-stranger', homes: ['home-l'] });
    const app = await online(url, at);
    const hub = await online(url, ht);
    app.send({ type: 'dial', reqId: 'l1', to: 'l-hub' });
    const req = await hub.next('request');
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    const s = await app.next('session');
    const mark = output.length;
    for (const [who, path] of [
      [xt, `/v1/rooms/${s.sessionId}`],
      [xt, '/v1/rooms/AAAAAAAAAAAAAAAAAAAAAA'],
      [at, '/v1/rooms/short'],
    ] as const) {
      const r = await connect(url, path, who);
      expect(await r.closed()).toBe(1008);
      expect(r.frames).toEqual([]);
    }
    // The member still joins: refusals left the room alone.
    const ra = await connect(url, `/v1/rooms/${s.sessionId}`, at);
    expect((await ra.next('joined')).peer).toBe('l-hub');
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const logged = output.slice(mark);
    // The log is live (wrangler reports each upgrade), so silence about errors means something.
    expect(logged.match(/GET \/v1\/rooms\/\S+ 101/g)?.length).toBeGreaterThanOrEqual(4);
    expect(logged).not.toMatch(/Uncaught|Network connection lost|ERROR/);
    for (const x of [ra, app, hub]) x.close();
  });
});
