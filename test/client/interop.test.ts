/**
 * Interop of the two Node backends through the real service: werift on one endpoint,
 * node-datachannel (libdatachannel) on the other, dialing in both directions through the worker in
 * workerd, on a direct loopback path and forced through our relay (relay/index.ts, TURN over UDP,
 * the one transport libjuice relays on). Each link must open only after identity binding verified
 * the peer (its certified id, bound to the DTLS certificate it presented), carry data both ways
 * with SHA-256 intact, and a signaling path that rewrites the DTLS fingerprint must fail the dial
 * with IdentityMismatch whichever backend sits on which side.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { Endpoint, LinkError, nodeBackend, type BackendFactory, type BackendName } from '../../client/index.js';
import { endpointFor, nextChannel, nextLink, randomId, sha256Of, transfer } from './helpers.js';
import { signalingProxy, signalsOf, type SignalingProxy } from './proxy.js';
import { TURN_SECRET, testRelay, type TestRelay } from './relay-helpers.js';

let relay: TestRelay;
let sig: SignalingHandle;
const endpoints: Endpoint[] = [];
const proxies: SignalingProxy[] = [];
const track = <T extends Endpoint>(e: T): T => (endpoints.push(e), e);
const MARKER = 'HOMELINK-INTEROP-MARKER-51c0de';
let seenMarker = false;

beforeAll(async () => {
  relay = await testRelay(44000, 44999, (_d, p) => {
    if (Buffer.from(p.buffer, p.byteOffset, p.byteLength).includes(MARKER)) seenMarker = true;
  });
  sig = await startSignaling({ relays: [relay.entry], turnSecret: TURN_SECRET, offlineWaitMs: 500 });
});
afterAll(async () => {
  await sig?.close();
  await relay?.close();
});
afterEach(async () => {
  for (const e of endpoints.splice(0)) e.close();
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

/**
 * The named backend through the library's own selection (`nodeBackend`, what `webrtcBackend` and
 * HOMELINK_BACKEND resolve through), counting the peer connections it made so a test can prove
 * which stack carried the link.
 */
async function counted(name: BackendName): Promise<{ factory: BackendFactory; made: () => number }> {
  const chosen = await nodeBackend(name);
  expect(chosen.name).toBe(name);
  let n = 0;
  return {
    factory: (o) => {
      n++;
      return chosen.factory(o);
    },
    made: () => n,
  };
}

const pairs: Array<[BackendName, BackendName]> = [
  ['werift', 'node-datachannel'],
  ['node-datachannel', 'werift'],
];

describe('werift <-> node-datachannel through the real worker and relay', () => {
  for (const [dialer, acceptor] of pairs) {
    for (const forced of [false, true]) {
      // Relay-only links asked of node-datachannel are built on werift (privacy: libjuice cannot keep
      // a link relay-only, client/webrtc/node-datachannel.ts), so the forced case is werift on both ends.
      const how = forced ? 'forced relay (TURN/UDP; relay-only runs on werift)' : 'direct';
      it(`${dialer} dials ${acceptor}, ${how}: identity verified both ways, 4 MiB each way intact`, async () => {
        const home = randomId('home');
        const [a, h] = [await counted(dialer), await counted(acceptor)];
        const policy = forced ? { iceTransportPolicy: 'relay' as const } : {};
        const hub = track(await endpointFor(sig, randomId('hub'), [home], { backend: h.factory, ...policy }));
        const app = track(await endpointFor(sig, randomId('app'), [home], { backend: a.factory, ...policy }));
        const accepted = nextLink(hub);
        hub.on('request', (r) => void r.accept());
        const link = await app.dial(hub.id, { timeoutMs: 20_000 });
        const peerLink = await accepted;
        expect([a.made(), h.made()]).toEqual([1, 1]);
        // Open means verified: each side checked the other's identity certificate and proof over
        // the fingerprint of the DTLS certificate that was actually presented (client/identity.ts).
        expect(link.peer).toBe(hub.id);
        expect(peerLink.peer).toBe(app.id);
        expect(link.path?.kind).toBe(forced ? 'relay' : 'direct');
        expect(peerLink.path?.kind).toBe(forced ? 'relay' : 'direct');
        if (forced) expect(link.path?.protocol).toBe('udp');

        const incoming = nextChannel(peerLink);
        const ch = await link.channel('bulk');
        const rx = await incoming;
        seenMarker = false;
        const got = new Promise<void>((resolve) => rx.on('message', (m) => typeof m === 'string' && m.includes(MARKER) && resolve()));
        await ch.send(`${MARKER} from ${dialer}`);
        await got;
        const total = 4 * 1024 * 1024;
        expect(await transfer(ch, rx, total, 11)).toBe(sha256Of(total, 11));
        expect(await transfer(rx, ch, total, 12)).toBe(sha256Of(total, 12));
        // Through the relay only ciphertext passes (DTLS); the tap saw relayed payloads but no marker.
        expect(seenMarker).toBe(false);

        // The acceptor opens a channel too (stream ids of its own DTLS role, RFC 8832 §6).
        const back = nextChannel(link);
        const ch2 = await peerLink.channel('from-acceptor');
        const rx2 = await back;
        const echoed = new Promise<string>((resolve) => rx2.once('message', (m) => resolve(String(m))));
        await ch2.send('hello dialer');
        expect(await echoed).toBe('hello dialer');

        const closed = new Promise<string>((r) => peerLink.once('close', r));
        link.close();
        expect(await closed).toMatch(/closed/);
      });
    }
  }

  for (const [dialer, acceptor] of pairs) {
    it(`${dialer} dials ${acceptor} through a proxy that rewrites the SDP fingerprint -> IdentityMismatch, no link`, async () => {
      const fake = Array.from({ length: 32 }, () => 'CD').join(':');
      const proxy = await signalingProxy(sig.url, (text, deliver) => {
        try {
          const f = JSON.parse(text) as Record<string, unknown>;
          const sdps = signalsOf(f).filter((d) => d['kind'] === 'offer' || d['kind'] === 'answer');
          for (const d of sdps) d['sdp'] = String(d['sdp']).replace(/^a=fingerprint:sha-256 .*$/gm, `a=fingerprint:sha-256 ${fake}`);
          if (sdps.length > 0) return deliver(JSON.stringify(f));
        } catch {
          // not JSON: pass through
        }
        deliver(text);
      });
      proxies.push(proxy);
      const home = randomId('home');
      const [a, h] = [await counted(dialer), await counted(acceptor)];
      const hub = track(await endpointFor(sig, randomId('hub'), [home], { backend: h.factory }));
      hub.on('request', (r) => void r.accept().catch(() => undefined));
      const app = track(await endpointFor({ ...sig, url: proxy.url }, randomId('app'), [home], { backend: a.factory }));
      const err = await app.dial(hub.id, { timeoutMs: 15_000 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LinkError);
      expect((err as LinkError).code).toBe('IdentityMismatch');
      expect(app.links).toHaveLength(0);
      expect(a.made()).toBe(1);
    });
  }
});
