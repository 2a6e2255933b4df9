/**
 * Clean close (issue 9, item 4) against the real worker in workerd and our relay on real sockets:
 * closing releases the TURN allocations (the relay's live-allocations gauge returns to where it
 * was), the peer learns of the close through a bye (a `close` with the bye's reason, not an ICE
 * restart cycle ending in NoPath), and a Node process that closed its endpoint exits by itself.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createDevIssuer } from '../../dev/issuer.js';
import type { Endpoint, Link } from '../../client/index.js';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { endpointFor, nextChannel, nextLink, randomId, needsWerift, failsOnNative } from './helpers.js';
import { TURN_SECRET, testRelay, type TestRelay } from './relay-helpers.js';
import type { CloseChildConfig } from './close-child.js';

/** Bound on the child's exit after `ep.close()` was called: werift's refresh timer alone held it 500 s before. */
const CHILD_EXIT_BOUND_MS = 20_000;
/** Bound on the allocations gauge returning to baseline. The deallocation is one round trip; this only bounds a failure. */
const GAUGE_BOUND_MS = 15_000;

let relay: TestRelay;
let sig: SignalingHandle;
let issuerDir: string;
const endpoints: Endpoint[] = [];
const track = <T extends Endpoint>(e: T): T => (endpoints.push(e), e);

beforeAll(async () => {
  issuerDir = mkdtempSync(join(tmpdir(), 'homelink-close-issuer-'));
  relay = await testRelay(44000, 44999, () => undefined, { metrics: true });
  sig = await startSignaling({ relays: [relay.entry], turnSecret: TURN_SECRET, offlineWaitMs: 500, issuer: await createDevIssuer({ dir: issuerDir }) });
});
afterAll(async () => {
  await sig?.close();
  await relay?.close();
  rmSync(issuerDir, { recursive: true, force: true });
});
afterEach(async () => {
  await Promise.all(endpoints.splice(0).map((e) => e.close()));
});

async function gaugeReaches(value: number): Promise<number> {
  const until = Date.now() + GAUGE_BOUND_MS;
  let now = await relay.allocations();
  while (now !== value && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100));
    now = await relay.allocations();
  }
  return now;
}

function closeReason(link: Link): Promise<{ reason: string; at: number }> {
  return new Promise((resolve) => link.once('close', (reason) => resolve({ reason, at: performance.now() })));
}

describe('clean close', () => {
  it.skipIf(needsWerift('TURN allocation released on close; libjuice leaves it to expire', 'link.close() on a relayed link: the peer gets the bye reason, both allocations are released'))('link.close() on a relayed link: the peer gets the bye reason, both allocations are released', async () => {
    const baseline = await relay.allocations();
    const home = randomId('home');
    const opts = { iceTransportPolicy: 'relay' as const, turnTlsOptions: { ca: relay.ca } };
    const hub = track(await endpointFor(sig, randomId('hub'), [home], opts));
    const app = track(await endpointFor(sig, randomId('app'), [home], opts));
    const accepted = nextLink(hub);
    hub.on('request', (r) => void r.accept());
    const link = await app.dial(hub.id, { timeoutMs: 20_000 });
    const peerLink = await accepted;
    expect(link.path?.kind).toBe('relay');
    expect(await relay.allocations()).toBeGreaterThanOrEqual(baseline + 2);

    const peerClosed = closeReason(peerLink);
    const t0 = performance.now();
    await link.close('done here');
    const { reason, at } = await peerClosed;
    // The bye's own reason: the peer heard it, it did not time out into NoPath.
    expect(reason).toBe('peer closed: done here');
    console.log(`peer learned of the close after ${(at - t0).toFixed(0)} ms`);
    expect(await gaugeReaches(baseline)).toBe(baseline);
    // Both endpoints stay usable: closing a link is not closing the endpoint.
    expect(app.isOnline && hub.isOnline).toBe(true);
  });

  const overChannel = 'the peer learns of the close over the data channel when the room cannot carry the bye';
  it.skipIf(failsOnNative('flaky: the bye over the data channel was lost in 1 of several full native runs', overChannel))(overChannel, async () => {
    const home = randomId('home');
    const hub = track(await endpointFor(sig, randomId('hub'), [home]));
    const app = track(await endpointFor(sig, randomId('app'), [home]));
    const accepted = nextLink(hub);
    hub.on('request', (r) => void r.accept());
    const link = await app.dial(hub.id, { timeoutMs: 20_000 });
    const peerLink = await accepted;
    const peerClosed = closeReason(peerLink);
    // The room socket is down (it reconnects with backoff): only the control channel is left.
    link.dropSignaling();
    await link.close('bye by data channel');
    expect((await peerClosed).reason).toBe('peer closed: bye by data channel');
  });

  it.skipIf(needsWerift('TURN allocation released on close; libjuice leaves it to expire', 'a process that closes its endpoint exits by itself; the peer gets the bye; the gauge returns'))('a process that closes its endpoint exits by itself; the peer gets the bye; the gauge returns', async () => {
    const baseline = await relay.allocations();
    const home = randomId('home');
    const hub = track(await endpointFor(sig, randomId('hub'), [home], { iceTransportPolicy: 'relay', turnTlsOptions: { ca: relay.ca } }));
    const accepted = nextLink(hub);
    hub.on('request', (r) => void r.accept());
    const cfg: CloseChildConfig = { signalingUrl: sig.url, issuerDir, id: randomId('app'), peer: hub.id, home, ca: relay.ca };
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/client/close-child.ts', JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const exited = new Promise<{ code: number | null; at: number }>((resolve) => child.once('exit', (code) => resolve({ code, at: performance.now() })));
    try {
      const peerLink = await accepted;
      const incoming = nextChannel(peerLink);
      await (await incoming).opened();
      const until = Date.now() + 30_000;
      while (!out.includes('open ') && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      expect(out).toMatch(/^open relay$/m);
      expect(await relay.allocations()).toBeGreaterThanOrEqual(baseline + 2);

      const peerClosed = closeReason(peerLink);
      const t0 = performance.now();
      child.stdin.write('close\n');
      const bound = new Promise<'bound'>((r) => setTimeout(() => r('bound'), CHILD_EXIT_BOUND_MS).unref());
      const result = await Promise.race([exited, bound]);
      expect(result, `child still running ${CHILD_EXIT_BOUND_MS} ms after close; stderr: ${err.slice(-2000)}`).not.toBe('bound');
      const { code, at } = result as { code: number | null; at: number };
      expect(code).toBe(0);
      expect(out).toMatch(/^closed \d+$/m);
      const { reason, at: peerAt } = await peerClosed;
      expect(reason).toBe('peer closed: endpoint closed');
      console.log(`child exited ${(at - t0).toFixed(0)} ms after close was asked (${/closed (\d+)/.exec(out)?.[1]} ms in ep.close()); peer learned after ${(peerAt - t0).toFixed(0)} ms; ${err.trim()}`);
      expect(await gaugeReaches(baseline)).toBe(baseline);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
