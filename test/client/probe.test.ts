/**
 * Relayed links on a stack without ICE restart look for a direct path with a probe connection
 * built beside the relayed one (client/session.ts, "Direct probe"): real endpoints against the
 * real worker in workerd, our relay on real sockets, real libdatachannel and werift peers on
 * loopback.
 *
 * The link opens relayed because each endpoint's first connection announces relayed candidates
 * only (`relayedOnly`, own loopback addresses); the probe connections that follow are left alone,
 * as a firewall rule lifted after the link opened would leave them. Checked: both sides move to
 * a direct path within a retry interval and a few seconds, 8 MiB sent across the move arrive
 * intact on the same channel objects, neither side ever calls the link interrupted, the relayed
 * connection's allocations are deleted, and a probe offer whose DTLS fingerprint a room MITM
 * rewrote ends the link with IdentityMismatch.
 */
import { createHash } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { nativeBackendWith, type Endpoint } from '../../client/index.js';
import type { Channel } from '../../client/channel.js';
import type { Link } from '../../client/link.js';
import { createWeriftBackend } from '../../client/webrtc/werift.js';
import { loadNodeDatachannel } from '../../client/webrtc/node-datachannel.js';
import type { BackendFactory, CandidateInit } from '../../client/webrtc/backend.js';
import { endpointFor, nextChannel, nextLink, payload, randomId, sha256Of } from './helpers.js';
import { jsonRewritingProxy, signalsOf, withForeignFingerprint, type SignalingProxy } from './proxy.js';
import { RELAYED_ONLY_HOSTS, RELAY_TO_RELAY_NATIVE, relayedOnly, TURN_SECRET, testRelay, type TestRelay } from './relay-helpers.js';

const haveNative = (await loadNodeDatachannel()) !== null;
if (!haveNative) console.log('skipped: needs node-datachannel (optional dependency not installed): direct probe tests');

/** Short retry interval (default 60 s), so the first probe comes soon after the link opened. */
const DIRECT_RETRY_MS = 1_000;
const TOTAL = 8 * 1024 * 1024;

let sig: SignalingHandle;
let relay: TestRelay;
const endpoints: Endpoint[] = [];
const proxies: SignalingProxy[] = [];
const track = <T extends Endpoint>(e: T): T => (endpoints.push(e), e);

beforeAll(async () => {
  relay = await testRelay(47600, 47799, () => undefined, { metrics: true });
  sig = await startSignaling({ relays: [relay.entry], turnSecret: TURN_SECRET, offlineWaitMs: 500 });
});
afterAll(async () => {
  await sig?.close();
  await relay?.close();
});
afterEach(async () => {
  await Promise.all(endpoints.splice(0).map((e) => e.close()));
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

type Side = 'native' | 'werift';
// The native side holds its relayed candidates: its first connection is relayed on loopback (see RELAY_TO_RELAY_NATIVE).
const factory = async (side: Side): Promise<BackendFactory> => (side === 'native' ? nativeBackendWith(RELAY_TO_RELAY_NATIVE) : (o) => createWeriftBackend(o, { networkWatch: false }));

/**
 * The endpoint's first connection announces its relayed candidates and, in place of its host
 * candidates, one host candidate where nothing answers (as a host behind a firewall would): the
 * link opens relayed, and the peer knows a direct path may exist. Later connections (probes,
 * rebuilds) announce everything.
 */
function relayedFirst(f: BackendFactory): BackendFactory {
  let built = 0;
  const first = relayedOnly(f);
  return async (o) => {
    if (built++ > 0) return f(o);
    const b = await first(o);
    let faked = false;
    return new Proxy(b, {
      set(target, prop, value: unknown) {
        if (prop === 'onCandidate' && typeof value === 'function') {
          const fn = value as (c: CandidateInit | null) => void;
          return Reflect.set(target, prop, (c: CandidateInit | null) => {
            if (c && !faked) {
              faked = true;
              fn({ ...c, candidate: 'candidate:9 1 udp 2122260223 127.0.0.99 9 typ host' });
            }
            fn(c);
          });
        }
        return Reflect.set(target, prop, value);
      },
    });
  };
}

async function pair(app: Side, hub: Side, hubUrl?: string) {
  const home = randomId('home');
  const common = { turnTlsOptions: { ca: relay.ca }, session: { directRetryMs: DIRECT_RETRY_MS, firstProbeMs: DIRECT_RETRY_MS } };
  const hubEp = track(await endpointFor(hubUrl ? { ...sig, url: hubUrl } : sig, randomId('hub'), [home], { ...common, hostAddresses: [RELAYED_ONLY_HOSTS.answerer], backend: relayedFirst(await factory(hub)) }));
  const appEp = track(await endpointFor(sig, randomId('app'), [home], { ...common, hostAddresses: [RELAYED_ONLY_HOSTS.offerer], backend: relayedFirst(await factory(app)) }));
  const accepted = nextLink(hubEp);
  hubEp.on('request', (r) => void r.accept().catch(() => undefined));
  const link = await appEp.dial(hubEp.id, { timeoutMs: 15_000 });
  const peerLink = await accepted;
  return { link, peerLink };
}

const wentDirect = (l: Link, ms: number): Promise<void> =>
  new Promise((resolve, reject) => {
    if (l.path?.kind === 'direct') return resolve();
    const t = setTimeout(() => reject(new Error(`no direct path within ${ms} ms`)), ms);
    l.on('path', (p) => p.kind === 'direct' && (clearTimeout(t), resolve()));
  });

/** Sends `total` bytes in 16 KiB chunks; the receiver's SHA-256. */
async function send(tx: Channel, rx: Channel, total: number): Promise<string> {
  const h = createHash('sha256');
  let got = 0;
  const done = new Promise<void>((resolve) =>
    rx.on('message', (m) => {
      if (typeof m === 'string') return;
      h.update(m);
      got += m.byteLength;
      if (got >= total) resolve();
    }),
  );
  for (const chunk of payload(total, 16 * 1024, 7)) await tx.send(chunk);
  await done;
  return h.digest('hex');
}

describe.skipIf(!haveNative)('direct probe on a relayed link that cannot restart ICE', () => {
  it.each([
    ['native', 'native'],
    ['werift', 'native'],
    ['native', 'werift'],
  ] as const)('%s dialer <-> %s acceptor: opens relayed, both sides move to a direct probe, 8 MiB across the move intact, never interrupted', async (app, hub) => {
    const { link, peerLink } = await pair(app, hub);
    expect(link.path?.kind, 'opens relayed').toBe('relay');
    const interruptions: string[] = [];
    link.on('interrupted', () => interruptions.push('app'));
    peerLink.on('interrupted', () => interruptions.push('hub'));
    const rxP = nextChannel(peerLink);
    const tx = await link.channel('bulk');
    const rx = await rxP;
    const sha = send(tx, rx, TOTAL);
    await Promise.all([wentDirect(link, DIRECT_RETRY_MS + 8_000), wentDirect(peerLink, DIRECT_RETRY_MS + 8_000)]);
    expect(await sha).toBe(sha256Of(TOTAL, 7));
    const [a, b] = await Promise.all([link.stats(), peerLink.stats()]);
    expect([a.probeSwitches, b.probeSwitches], 'probe switches').toEqual([1, 1]);
    expect([a.path?.kind, b.path?.kind]).toEqual(['direct', 'direct']);
    expect(interruptions, 'interrupted events').toEqual([]);
    // The same channel objects carry on: a message after the move.
    const echo = new Promise<string>((r) => rx.once('message', (m) => r(String(m))));
    await tx.send('after the move');
    expect(await echo).toBe('after the move');
    // The relayed connections are gone, and with them their allocations (the initiator's after its linger).
    const deadline = Date.now() + 5_000;
    while ((await relay.allocations()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(await relay.allocations(), 'allocations left on the relay').toBe(0);
  });

  it('a probe offer reaching the acceptor with a rewritten DTLS fingerprint -> IdentityMismatch, both links closed', async () => {
    const proxy = await jsonRewritingProxy(sig.url, (f) => {
      for (const d of signalsOf(f)) if (d['kind'] === 'offer' && d['probe'] === true) d['sdp'] = withForeignFingerprint(String(d['sdp']));
      return f;
    });
    proxies.push(proxy);
    const { link, peerLink } = await pair('native', 'native', proxy.url);
    const within = (p: Promise<string>): Promise<string> => Promise.race([p, new Promise<string>((r) => setTimeout(() => r('still open after 15 s'), 15_000))]);
    const hubClosed = within(new Promise<string>((r) => peerLink.once('close', r)));
    const appClosed = within(new Promise<string>((r) => link.once('close', r)));
    expect(await hubClosed).toMatch(/^IdentityMismatch: peer fingerprint changed/);
    expect(await appClosed).toMatch(/identity|IdentityMismatch/);
  });
});
