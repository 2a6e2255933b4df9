/**
 * Path kind when only one side is forced through the relay (client/path.ts).
 *
 * The side that is not forced sees the peer's relayed address first as a peer-reflexive
 * candidate: the peer's connectivity check, sent through the relay, arrives before its trickled
 * relay candidate. werift then keeps the pair on that prflx candidate. The rules are tested on
 * their own first, then end to end: our relay, the real worker, real werift on both sides, with
 * the forced side's trickled candidates held back by a signaling proxy so they reach the other
 * side only after checks began. Both sides must end on `relay`.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { signalingProxy, signalsOf } from './proxy.js';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import type { Channel, Endpoint, Link, LinkPath } from '../../client/index.js';
import { MAX_REMOTE_CANDIDATES, PathClassifier } from '../../client/path.js';
import type { CandidateInfo, SelectedPair } from '../../client/webrtc/backend.js';
import { endpointFor, randomId, sha256Of, transfer } from './helpers.js';
import { TURN_SECRET, testRelay, type TestRelay } from './relay-helpers.js';

// ---- the rules -------------------------------------------------------------------------------

const RELAY_IP = '203.0.113.7';
const servers = [{ urls: [`turn:${RELAY_IP}:3478?transport=udp`, `turns:relay.example:5349`, 'stun:198.51.100.9:3478'] }];
const cand = (type: CandidateInfo['type'], address: string, port: number): CandidateInfo => ({ type, address, port, protocol: 'udp' });
const pairOf = (local: CandidateInfo, remote: CandidateInfo): SelectedPair => ({ local, remote });
const line = (type: string, address: string, port: number): string => `candidate:1 1 udp 100 ${address} ${port} typ ${type}`;
const LOCAL = cand('host', '198.51.100.20', 50000);

describe('PathClassifier', () => {
  it('a remote prflx on a relay server address is relay; on another address it is direct', () => {
    const c = new PathClassifier();
    c.setIceServers(servers);
    expect(c.classify(pairOf(LOCAL, cand('prflx', RELAY_IP, 49152))).kind).toBe('relay');
    expect(c.classify(pairOf(LOCAL, cand('prflx', '198.51.100.30', 49152))).kind).toBe('direct');
    // A STUN server is not a relay.
    expect(c.classify(pairOf(LOCAL, cand('prflx', '198.51.100.9', 49152))).kind).toBe('direct');
  });

  it('a candidate signaled later for the same address:port decides, either way', () => {
    const c = new PathClassifier();
    const remote = cand('prflx', '198.51.100.30', 40000);
    expect(c.classify(pairOf(LOCAL, remote)).kind).toBe('direct');
    c.noteRemote(line('relay', '198.51.100.30', 40000));
    expect(c.classify(pairOf(LOCAL, remote)).kind).toBe('relay');

    const d = new PathClassifier();
    d.setIceServers(servers);
    const onRelayHost = cand('prflx', RELAY_IP, 40001);
    expect(d.classify(pairOf(LOCAL, onRelayHost)).kind).toBe('relay');
    d.noteRemote(line('host', RELAY_IP, 40001));
    expect(d.classify(pairOf(LOCAL, onRelayHost)).kind).toBe('direct');
  });

  it('an address shared with a non-relayed candidate decides nothing by itself (loopback stack, peer on the relay host)', () => {
    const loop = new PathClassifier();
    loop.setIceServers([{ urls: ['turn:127.0.0.1:3478'] }]);
    const remote = cand('prflx', '127.0.0.1', 45000);
    // Our own candidate is on the relay's address.
    expect(loop.classify(pairOf(cand('host', '127.0.0.1', 50000), remote)).kind).toBe('direct');
    loop.noteRemote(line('relay', '127.0.0.1', 45000));
    expect(loop.classify(pairOf(cand('host', '127.0.0.1', 50000), remote)).kind).toBe('relay');

    const shared = new PathClassifier();
    shared.setIceServers(servers);
    shared.noteRemote(line('host', RELAY_IP, 41000));
    expect(shared.classify(pairOf(LOCAL, cand('prflx', RELAY_IP, 41001))).kind).toBe('direct');
  });

  it('local relay, remote relay and IPv6 relay URLs', () => {
    const c = new PathClassifier();
    c.setIceServers([{ urls: ['turn:[2001:DB8::1]:3478?transport=tcp'] }]);
    expect(c.classify(pairOf(cand('relay', RELAY_IP, 1), cand('host', '198.51.100.30', 2))).kind).toBe('relay');
    expect(c.classify(pairOf(LOCAL, cand('relay', '198.51.100.30', 2))).kind).toBe('relay');
    expect(c.classify(pairOf(LOCAL, cand('prflx', '2001:db8::1', 2))).kind).toBe('relay');
  });

  it('ignores malformed candidate lines and forgets the oldest beyond its bound', () => {
    const c = new PathClassifier();
    for (const bad of ['', 'candidate:', 'candidate:1 1 udp 1 1.2.3.4 99999999 typ relay', 'x'.repeat(10_000)]) c.noteRemote(bad);
    c.noteRemote(line('relay', '198.51.100.40', 1));
    expect(c.classify(pairOf(LOCAL, cand('prflx', '198.51.100.40', 1))).kind).toBe('relay');
    for (let i = 0; i < MAX_REMOTE_CANDIDATES; i++) c.noteRemote(line('host', '198.51.100.41', 1000 + i));
    expect(c.classify(pairOf(LOCAL, cand('prflx', '198.51.100.40', 1))).kind).toBe('direct');
    expect(c.classify(pairOf(LOCAL, cand('prflx', '198.51.100.41', 1000 + MAX_REMOTE_CANDIDATES - 1))).kind).toBe('direct');
  });
});

// ---- end to end ------------------------------------------------------------------------------

/** How long the proxy holds back trickled candidates: well past the first checks on loopback. */
const CANDIDATE_DELAY_MS = 1_500;
/** Bound on waiting for the late candidate to reclassify the path. */
const RECLASSIFY_WAIT_MS = 15_000;

let relay: TestRelay;
/** Payload bytes our relay forwarded, both directions. */
let relayedBytes = 0;
let sig: SignalingHandle;
const endpoints: Endpoint[] = [];
const track = <T extends Endpoint>(e: T): T => (endpoints.push(e), e);
const proxies: Array<() => Promise<void>> = [];

/**
 * A WebSocket proxy in front of the worker for one endpoint: room `signal` frames carrying a
 * candidate are delivered to that endpoint `delayMs` late (in order); everything else at once.
 * `candidates` collects every candidate line the peer signaled to that endpoint (trickled or in
 * its offer/answer): what the peer disclosed about its addresses.
 */
async function delayingProxy(delayMs: number): Promise<{ url: string; candidates: string[] }> {
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const candidates: string[] = [];
  const proxy = await signalingProxy(sig.url, (text, deliver) => {
    let candidate = false;
    try {
      // A batch is delayed only when it holds nothing but candidates (the forced side does not batch: see below).
      const signals = signalsOf(JSON.parse(text) as Record<string, unknown>);
      candidate = signals.length > 0 && signals.every((d) => d['kind'] === 'candidate');
      for (const d of signals) {
        if (d['kind'] === 'candidate' && typeof d['candidate'] === 'string' && d['candidate'] !== '') candidates.push(d['candidate']);
        if (typeof d['sdp'] === 'string') candidates.push(...d['sdp'].split(/\r?\n/).filter((l) => l.startsWith('a=candidate:')));
      }
    } catch {
      // not JSON: pass it on unchanged
    }
    if (!candidate) return deliver(text);
    const t = setTimeout(() => {
      timers.delete(t);
      deliver(text);
    }, delayMs);
    timers.add(t);
  });
  proxies.push(() => {
    for (const t of timers) clearTimeout(t);
    return proxy.close();
  });
  return { url: proxy.url, candidates };
}

/** Resolves with the link's path once it is relayed (now or after a `path` event), or the last path seen when the bound passes. */
function relayedPath(link: Link): Promise<LinkPath | null> {
  if (link.path?.kind === 'relay') return Promise.resolve(link.path);
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      off();
      resolve(link.path);
    }, RECLASSIFY_WAIT_MS);
    const off = link.on('path', (p) => {
      if (p.kind !== 'relay') return;
      clearTimeout(t);
      off();
      resolve(p);
    });
  });
}

beforeAll(async () => {
  relay = await testRelay(46000, 46499, (_dir, p) => (relayedBytes += p.byteLength));
  sig = await startSignaling({ relays: [relay.entry], turnSecret: TURN_SECRET, offlineWaitMs: 500 });
});
afterAll(async () => {
  await sig?.close();
  await relay?.close();
});
afterEach(async () => {
  for (const e of endpoints.splice(0)) e.close();
  await Promise.all(proxies.splice(0).map((close) => close()));
});

describe('one side forced through the relay, the other not (the suite\'s backend on both sides)', () => {
  for (const forced of ['dialer', 'acceptor'] as const) {
    const title = `${forced} forced to relay, its candidates trickled late: both sides report relay, the forced side discloses relayed candidates only`;
    it(title, async () => {
      const home = randomId('home');
      // Its candidates trickle one per frame (no batches), so the proxy can hold them back alone.
      const relayOnly = { iceTransportPolicy: 'relay' as const, turnTlsOptions: { ca: relay.ca }, signalBatchMs: 0 };
      // The side that is not forced hears the forced side's candidates late, through the proxy.
      const proxy = await delayingProxy(CANDIDATE_DELAY_MS);
      const late = { signalingUrl: proxy.url, turnTlsOptions: { ca: relay.ca } };
      const hub = track(await endpointFor(sig, randomId('hub'), [home], forced === 'acceptor' ? relayOnly : late));
      const app = track(await endpointFor(sig, randomId('app'), [home], forced === 'dialer' ? relayOnly : late));
      const accepted = new Promise<Link>((resolve, reject) => hub.on('request', (r) => void r.accept().then(resolve, reject)));
      const link = await app.dial(hub.id, { timeoutMs: 20_000 });
      const peerLink = await accepted;

      const [mine, theirs] = await Promise.all([relayedPath(link), relayedPath(peerLink)]);
      expect(mine?.kind).toBe('relay');
      expect(theirs?.kind).toBe('relay');

      // The link works on that path, and what the forced side sends crosses the relay (a
      // host-to-host pair would carry it past the relay: the address it wanted hidden would leak).
      const [forcedLink, otherLink] = forced === 'dialer' ? [link, peerLink] : [peerLink, link];
      const incoming = new Promise<Channel>((resolve) => otherLink.once('channel', resolve));
      const ch = await forcedLink.channel('check');
      const rx = await incoming;
      const before = relayedBytes;
      const total = 2 * 1024 * 1024;
      expect(await transfer(ch, rx, total, 3)).toBe(sha256Of(total, 3));
      expect(relayedBytes - before).toBeGreaterThanOrEqual(total);

      // Privacy: the forced side told its peer of relayed addresses only (node-datachannel signalled
      // its host candidates and sent from its host socket before; client/webrtc/node-datachannel.ts).
      expect(proxy.candidates.length).toBeGreaterThan(0);
      expect(proxy.candidates.filter((c) => !/ typ relay( |$)/.test(c))).toEqual([]);
    });
  }
});
