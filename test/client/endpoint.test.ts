/**
 * Endpoints against the real signaling worker in workerd (test/support/signaling.ts), real werift
 * peers on loopback: dial/accept on a direct path with 20 MiB each way, and every typed failure.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { Endpoint, LinkError } from '../../client/index.js';
import { acceptAll, endpointFor, nextChannel, nextLink, randomId, sha256Of, transfer, needsWerift } from './helpers.js';

let sig: SignalingHandle;
const endpoints: Endpoint[] = [];
const track = <T extends Endpoint>(e: T): T => (endpoints.push(e), e);

beforeAll(async () => {
  sig = await startSignaling({ offlineWaitMs: 500 });
});
afterAll(async () => {
  await sig?.close();
});
afterEach(() => {
  for (const e of endpoints.splice(0)) e.close();
});

describe('endpoint over the real worker', () => {
  it('dials and accepts on a direct path; 20 MiB each way with SHA-256 intact', async () => {
    const home = randomId('home');
    const hub = track(await endpointFor(sig, randomId('hub'), [home]));
    const app = track(await endpointFor(sig, randomId('app'), [home]));
    const accepted = nextLink(hub);
    hub.on('request', (req) => {
      expect(req.peer).toBe(app.id);
      void req.accept();
    });
    const link = await app.dial(hub.id, { timeoutMs: 20_000 });
    const peerLink = await accepted;
    expect(link.peer).toBe(hub.id);
    expect(peerLink.peer).toBe(app.id);
    expect(link.path?.kind).toBe('direct');
    expect(link.path?.local).toMatch(/^127\.0\.0\.1:/);

    const incoming = nextChannel(peerLink);
    const ch = await link.channel('bulk');
    const rx = await incoming;
    const total = 20 * 1024 * 1024;
    expect(await transfer(ch, rx, total, 3)).toBe(sha256Of(total, 3));
    expect(await transfer(rx, ch, total, 4)).toBe(sha256Of(total, 4));
    const st = await link.stats();
    // werift counts datagram bytes, libdatachannel the SCTP user data: at least the payload either way.
    expect(st.bytesSent).toBeGreaterThanOrEqual(total);
    expect(st.bytesReceived).toBeGreaterThanOrEqual(total);

    const closed = new Promise<string>((r) => peerLink.once('close', r));
    link.close();
    expect(await closed).toMatch(/closed/);
  });

  it('reject -> Rejected with the reason; nothing left open', async () => {
    const home = randomId('home');
    const hub = track(await endpointFor(sig, randomId('hub'), [home]));
    const app = track(await endpointFor(sig, randomId('app'), [home]));
    hub.on('request', (req) => req.reject('busy'));
    const err = await app.dial(hub.id).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LinkError);
    expect((err as LinkError).code).toBe('Rejected');
    expect((err as LinkError).reason).toBe('busy');
    expect(app.links).toHaveLength(0);
    expect(hub.links).toHaveLength(0);
  });

  it('offline and out-of-home peers both -> PeerOffline (the service makes them indistinguishable)', async () => {
    const app = track(await endpointFor(sig, randomId('app'), [randomId('home')]));
    const other = track(await endpointFor(sig, randomId('hub'), [randomId('home')]));
    acceptAll(other);
    expect(await app.dial('nobody-here').catch((e: LinkError) => e.code)).toBe('PeerOffline');
    expect(await app.dial(other.id).catch((e: LinkError) => e.code)).toBe('PeerOffline');
  });

  it('a token the service refuses -> Unauthorized at connect', async () => {
    const err = await Endpoint.connect({
      signalingUrl: sig.url,
      token: 'not-a-token',
      identity: { certificate: 'x', privateKey: (await import('../../client/identity.js').then((m) => m.generateDeviceKey())).privateKey },
      trust: { issuer: sig.issuer.issuer, jwks: sig.issuer.publicJwks },
    }).catch((e: unknown) => e);
    expect((err as LinkError).code).toBe('Unauthorized');
  });

  it('a peer that never answers -> Timeout; an abort signal -> Aborted', async () => {
    const home = randomId('home');
    const hub = track(await endpointFor(sig, randomId('hub'), [home]));
    const app = track(await endpointFor(sig, randomId('app'), [home]));
    hub.on('request', () => undefined); // listens, never answers
    expect(await app.dial(hub.id, { timeoutMs: 800 }).catch((e: LinkError) => e.code)).toBe('Timeout');
    const ac = new AbortController();
    const p = app.dial(hub.id, { signal: ac.signal });
    setTimeout(() => ac.abort(), 200);
    expect(await p.catch((e: LinkError) => e.code)).toBe('Aborted');
    expect(app.links).toHaveLength(0);
  });

  it('signaling sockets dropped mid-session: the link carries on, presence comes back, dialing works again', async () => {
    const home = randomId('home');
    const hub = track(await endpointFor(sig, randomId('hub'), [home]));
    const app = track(await endpointFor(sig, randomId('app'), [home]));
    // The last dial's acceptor may still be verifying when the endpoints close (node-datachannel's dialer opens first).
    hub.on('request', (req) => void req.accept().catch(() => undefined));
    const accepted = nextLink(hub);
    const link = await app.dial(hub.id);
    const peerLink = await accepted;
    const incoming = nextChannel(peerLink);
    const ch = await link.channel('bulk');
    const rx = await incoming;
    const total = 4 * 1024 * 1024;
    const sending = transfer(ch, rx, total, 11);
    const offline = new Promise<void>((r) => app.once('offline', r));
    const online = new Promise<void>((r) => app.once('online', r));
    app.dropSignaling();
    hub.dropSignaling();
    link.dropSignaling();
    peerLink.dropSignaling();
    await offline;
    expect(await sending).toBe(sha256Of(total, 11));
    await online;
    expect(link.isOpen).toBe(true);
    expect(app.isOnline).toBe(true);
    const again = await app.dial(hub.id);
    expect(again.isOpen).toBe(true);
    again.close();
  });

  it('closing endpoints releases every socket they opened (presence, rooms, werift UDP)', async () => {
    const count = (): number => process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'UDPWrap').length;
    const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 500));
    await settle();
    const before = count();
    const home = randomId('home');
    const hub = await endpointFor(sig, randomId('hub'), [home]);
    const app = await endpointFor(sig, randomId('app'), [home]);
    // The acceptor's side may still be verifying when both close (node-datachannel's dialer opens first).
    hub.on('request', (req) => void req.accept().catch(() => undefined));
    const link = await app.dial(hub.id);
    await link.channel('x');
    expect(count()).toBeGreaterThan(before);
    app.close();
    hub.close();
    await settle();
    expect(count()).toBeLessThanOrEqual(before);
  });

  it('a channel opened and written right after dial() reaches a listener the acceptor adds on its link event', async () => {
    const home = randomId('home');
    const hub = track(await endpointFor(sig, randomId('hub'), [home]));
    const app = track(await endpointFor(sig, randomId('app'), [home]));
    hub.on('request', (req) => void req.accept());
    const got: string[] = [];
    const all = new Promise<void>((resolve) => {
      hub.on('link', (l) =>
        l.on('channel', (ch) =>
          ch.on('message', (m) => {
            got.push(String(m));
            if (got.length === 50) resolve();
          }),
        ),
      );
    });
    const link = await app.dial(hub.id);
    const ch = await link.channel('early');
    for (let i = 0; i < 50; i++) await ch.send(`m${i}`);
    await all;
    expect(got).toEqual(Array.from({ length: 50 }, (_, i) => `m${i}`));
  });
});
