/**
 * A hostile signaling path: a WebSocket proxy between one endpoint and the real worker that
 * rewrites room frames. Identity binding must make every such dial fail with IdentityMismatch,
 * and leave nothing open. Also: a peer holding a valid certificate for another id is refused,
 * and a malicious server's garbage frames do not crash the client.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { Endpoint, LinkError, generateDeviceKey } from '../../client/index.js';
import { endpointFor, nextLink, randomId } from './helpers.js';
import { jsonRewritingProxy, signalingProxy, signalsOf, type SignalingProxy } from './proxy.js';

let sig: SignalingHandle;
const endpoints: Endpoint[] = [];
const track = <T extends Endpoint>(e: T): T => (endpoints.push(e), e);
const proxies: SignalingProxy[] = [];

beforeAll(async () => {
  sig = await startSignaling({ offlineWaitMs: 500 });
});
afterAll(async () => {
  await sig?.close();
});
afterEach(async () => {
  for (const e of endpoints.splice(0)) e.close();
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

type Rewrite = (frame: Record<string, unknown>) => Record<string, unknown> | string | null;

/** A proxy to the worker that passes frames through `toClient` on their way to the client. */
async function mitmProxy(toClient: Rewrite): Promise<string> {
  const proxy = await jsonRewritingProxy(sig.url, toClient);
  proxies.push(proxy);
  return proxy.url;
}


function udpSockets(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'UDPWRAP' || r === 'UDPWrap').length;
}

async function dialThrough(proxyUrl: string, hubIdentity?: { sub: string }) {
  const home = randomId('home');
  const hubId = randomId('hub');
  const hub = track(await endpointFor(sig, hubId, [home]));
  if (hubIdentity) {
    // Valid token for hubId, but an identity certificate naming someone else.
    hub.close();
    const k = await generateDeviceKey();
    const certificate = await sig.issuer.identityCertificate({ sub: hubIdentity.sub, publicJwk: k.publicJwk });
    const liar = track(
      await Endpoint.connect({
        signalingUrl: sig.url,
        token: await sig.issuer.accessToken({ sub: hubId, homes: [home] }),
        identity: { certificate, privateKey: k.privateKey },
        trust: { issuer: sig.issuer.issuer, jwks: sig.issuer.publicJwks },
        hostAddresses: ['127.0.0.1'],
      }),
    );
    liar.on('request', (r) => void r.accept().catch(() => undefined));
  } else {
    hub.on('request', (r) => void r.accept().catch(() => undefined));
  }
  const app = track(await endpointFor({ ...sig, url: proxyUrl }, randomId('app'), [home]));
  const before = udpSockets();
  const err = await app.dial(hubId, { timeoutMs: 15_000 }).catch((e: unknown) => e);
  await new Promise((r) => setTimeout(r, 300));
  return { err: err as LinkError, app, leakedUdp: udpSockets() - before };
}

describe('identity binding against a hostile signaling path', () => {
  it('a proxy that rewrites the DTLS fingerprint in the SDP -> IdentityMismatch, nothing left open', async () => {
    const fake = Array.from({ length: 32 }, () => 'AB').join(':');
    const url = await mitmProxy((f) => {
      for (const d of signalsOf(f)) {
        if (d['kind'] === 'answer' || d['kind'] === 'offer') d['sdp'] = String(d['sdp']).replace(/^a=fingerprint:sha-256 .*$/gm, `a=fingerprint:sha-256 ${fake}`);
      }
      return f;
    });
    const { err, app, leakedUdp } = await dialThrough(url);
    expect(err).toBeInstanceOf(LinkError);
    expect(err.code).toBe('IdentityMismatch');
    expect(app.links).toHaveLength(0);
    expect(leakedUdp).toBeLessThanOrEqual(0);
  });

  it('a proxy that swaps the identity certificate for one naming another endpoint -> IdentityMismatch', async () => {
    const k = await generateDeviceKey();
    const other = await sig.issuer.identityCertificate({ sub: 'mallory', publicJwk: k.publicJwk });
    const url = await mitmProxy((f) => {
      for (const d of signalsOf(f)) if (d['kind'] === 'identity') d['cert'] = other;
      return f;
    });
    const { err, app } = await dialThrough(url);
    expect(err.code).toBe('IdentityMismatch');
    expect(app.links).toHaveLength(0);
  });

  it('a proxy that swaps in a valid certificate for the right id but another key -> IdentityMismatch', async () => {
    const home = randomId('home');
    const hubId = randomId('hub');
    const k = await generateDeviceKey();
    const forged = await sig.issuer.identityCertificate({ sub: hubId, publicJwk: k.publicJwk });
    const url = await mitmProxy((f) => {
      for (const d of signalsOf(f)) if (d['kind'] === 'identity') d['cert'] = forged;
      return f;
    });
    const hub = track(await endpointFor(sig, hubId, [home]));
    hub.on('request', (r) => void r.accept().catch(() => undefined));
    const app = track(await endpointFor({ ...sig, url }, randomId('app'), [home]));
    const err = (await app.dial(hubId, { timeoutMs: 15_000 }).catch((e: unknown) => e)) as LinkError;
    expect(err.code).toBe('IdentityMismatch');
  });

  it('a peer whose certificate comes from an issuer we do not trust -> Unauthorized', async () => {
    const home = randomId('home');
    const hubId = randomId('hub');
    const { testIssuer } = await import('./helpers.js');
    const rogue = await testIssuer('https://rogue.example');
    const hub = track(
      await Endpoint.connect({
        signalingUrl: sig.url,
        token: await sig.issuer.accessToken({ sub: hubId, homes: [home] }),
        identity: await rogue.device(hubId),
        trust: { issuer: sig.issuer.issuer, jwks: sig.issuer.publicJwks },
        hostAddresses: ['127.0.0.1'],
      }),
    );
    hub.on('request', (r) => void r.accept().catch(() => undefined));
    const app = track(await endpointFor(sig, randomId('app'), [home]));
    const err = (await app.dial(hubId, { timeoutMs: 15_000 }).catch((e: unknown) => e)) as LinkError;
    expect(err.code).toBe('Unauthorized');
  });

  it('a peer whose (valid) certificate names another id is refused', async () => {
    const { err } = await dialThrough(sig.url, { sub: 'someone-else' });
    expect(err.code).toBe('IdentityMismatch');
  });

  it('garbage and hostile frames from the server are dropped, counted, and the link still opens', async () => {
    const home = randomId('home');
    const hubId = randomId('hub');
    const hub = track(await endpointFor(sig, hubId, [home]));
    const accepted = nextLink(hub);
    hub.on('request', (r) => void r.accept());
    const junk = [
      'not json',
      '{"type":1}',
      '[]',
      JSON.stringify({ type: 'signal', seq: 'x', data: { kind: 'offer' } }),
      JSON.stringify({ type: 'signal', seq: 1, data: { kind: 'candidate', candidate: 'x'.repeat(5000) } }),
      JSON.stringify({ type: 'ice_servers', iceServers: [{ urls: ['http://evil.example'] }] }),
      JSON.stringify({ type: 'session', reqId: 'r1', sessionId: 'short' }),
      JSON.stringify({ type: 'joined', sessionId: 'x', role: 'god' }),
      // Batches no service sends: empty, too long, holding a bye or another batch, not a list.
      JSON.stringify({ type: 'signal', seq: 1, data: { kind: 'batch', items: [] } }),
      JSON.stringify({ type: 'signal', seq: 1, data: { kind: 'batch', items: Array.from({ length: 33 }, () => ({ kind: 'candidate', candidate: '' })) } }),
      JSON.stringify({ type: 'signal', seq: 1, data: { kind: 'batch', items: [{ kind: 'bye' }] } }),
      JSON.stringify({ type: 'signal', seq: 1, data: { kind: 'batch', items: [{ kind: 'batch', items: [] }] } }),
      JSON.stringify({ type: 'signal', seq: 1, data: { kind: 'batch', items: { 0: { kind: 'bye' }, length: 1 } } }),
    ];
    const hostile = await hostileProxy(junk);
    const app = track(await endpointFor({ ...sig, url: hostile }, randomId('app'), [home]));
    const link = await app.dial(hubId, { timeoutMs: 15_000 });
    await accepted;
    expect(link.isOpen).toBe(true);
    expect((await link.stats()).badFrames).toBeGreaterThan(0);
  });
});

/** A proxy that sends `junk` frames to the client before every real frame. */
async function hostileProxy(junk: string[]): Promise<string> {
  const proxy = await signalingProxy(sig.url, (text, deliver) => {
    for (const j of junk) if (j.length < 60_000) deliver(j);
    deliver(new Uint8Array([1, 2, 3]));
    deliver(text);
  });
  proxies.push(proxy);
  return proxy.url;
}
