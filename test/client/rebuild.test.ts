/**
 * Links on node-datachannel recover by rebuilding the peer connection (client/session.ts,
 * "Rebuild instead of restart"): real endpoints against the real worker in workerd, real
 * libdatachannel and werift peers on loopback. A rebuild is set off the way a network change
 * sets it off: the responder's room socket drops and rejoins, and the initiator, hearing
 * `peer_joined` on an open link, recovers at once.
 *
 * Checked here: 20 MiB sent across a rebuild arrive intact (SHA-256) on native<->native and on
 * native<->werift in both roles; the application's channel objects stay the same and keep
 * working; a rebuild offer or answer whose DTLS fingerprint a room MITM rewrote ends the link
 * with IdentityMismatch and leaves nothing open.
 */
import { createHash } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { nodeBackend, type Endpoint } from '../../client/index.js';
import type { Channel } from '../../client/channel.js';
import type { Link } from '../../client/link.js';
import { createWeriftBackend } from '../../client/webrtc/werift.js';
import { loadNodeDatachannel } from '../../client/webrtc/node-datachannel.js';
import type { BackendFactory } from '../../client/webrtc/backend.js';
import { endpointFor, nextChannel, nextLink, payload, randomId, sha256Of } from './helpers.js';
import { jsonRewritingProxy, signalsOf, withForeignFingerprint, type SignalingProxy } from './proxy.js';

const haveNative = (await loadNodeDatachannel()) !== null;
if (!haveNative) console.log('skipped: needs node-datachannel (optional dependency not installed): rebuild tests');

let sig: SignalingHandle;
const endpoints: Endpoint[] = [];
const proxies: SignalingProxy[] = [];
const track = <T extends Endpoint>(e: T): T => (endpoints.push(e), e);

beforeAll(async () => {
  sig = await startSignaling({ offlineWaitMs: 500 });
});
afterAll(async () => {
  await sig?.close();
});
afterEach(async () => {
  await Promise.all(endpoints.splice(0).map((e) => e.close()));
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

type Side = 'native' | 'werift';
const factories = async (): Promise<Record<Side, BackendFactory>> => ({
  native: (await nodeBackend('node-datachannel')).factory,
  werift: (o) => createWeriftBackend(o, { networkWatch: false }),
});

async function pair(app: Side, hub: Side, hubUrl?: string, appUrl?: string) {
  const f = await factories();
  const home = randomId('home');
  const hubEp = track(await endpointFor(hubUrl ? { ...sig, url: hubUrl } : sig, randomId('hub'), [home], { backend: f[hub] }));
  const appEp = track(await endpointFor(appUrl ? { ...sig, url: appUrl } : sig, randomId('app'), [home], { backend: f[app] }));
  const accepted = nextLink(hubEp);
  hubEp.on('request', (r) => void r.accept().catch(() => undefined));
  const link = await appEp.dial(hubEp.id, { timeoutMs: 15_000 });
  const peerLink = await accepted;
  if (process.env['RB_DEBUG']) {
    link.on('close', (r) => console.log('DEBUG app close', r));
    peerLink.on('close', (r) => console.log('DEBUG hub close', r));
  }
  return { hubEp, appEp, link, peerLink };
}

/** Resolves when `link` hears its path is lost (`interrupted`). */
const interrupted = (link: Link): Promise<void> => new Promise((r) => link.once('interrupted', r));
const resumed = (link: Link): Promise<void> => new Promise((r) => link.once('resumed', r));

/**
 * Sends `total` bytes from `tx` to `rx`; after `atChunk` chunks it drops the responder's room
 * socket and waits until the sending link is interrupted (the rebuild has begun), then sends the
 * rest. Returns the receiver's SHA-256 and how many messages it got.
 */
async function transferAcrossRebuild(tx: Channel, rx: Channel, total: number, seed: number, trigger: () => Promise<void>, atChunk: number): Promise<{ sha: string; messages: number }> {
  const h = createHash('sha256');
  let got = 0;
  let messages = 0;
  const done = new Promise<void>((resolve, reject) => {
    const off = rx.on('message', (m) => {
      if (typeof m === 'string') return;
      h.update(m);
      messages++;
      got += m.byteLength;
      if (got >= total) {
        off();
        resolve();
      }
    });
    rx.once('close', () => reject(new Error(`receiver closed after ${got} bytes`)));
  });
  let i = 0;
  for (const b of payload(total, 16 * 1024, seed)) {
    await tx.send(b);
    // Overwritten after send() resolved: a resend must still carry what was sent.
    b.fill(0);
    if (++i === atChunk) await trigger();
  }
  await done;
  return { sha: h.digest('hex'), messages };
}

describe.skipIf(!haveNative)('rebuild instead of ICE restart (node-datachannel)', () => {
  it.each([
    ['native', 'native'],
    ['native', 'werift'],
    ['werift', 'native'],
  ] as const)('%s dialer <-> %s acceptor: 20 MiB across a rebuild mid-transfer, SHA-256 intact, same channel objects', async (appSide, hubSide) => {
    const { link, peerLink } = await pair(appSide, hubSide);
    const incoming = nextChannel(peerLink);
    const ch = await link.channel('bulk');
    const rx = await incoming;
    const total = 20 * 1024 * 1024;
    const chunks = total / (16 * 1024);
    const back = resumed(link);
    const trigger = async (): Promise<void> => {
      const lost = interrupted(link);
      peerLink.dropSignaling();
      await lost;
    };
    const r = await transferAcrossRebuild(ch, rx, total, 21, trigger, 300);
    expect(r.sha).toBe(sha256Of(total, 21));
    expect(r.messages).toBe(chunks);
    await back;
    expect((await link.stats()).rebuilds).toBeGreaterThan(0);
    expect((await peerLink.stats()).rebuilds).toBeGreaterThan(0);
    // The same objects carry on, both ways.
    const reply = new Promise<string>((r2) => ch.once('message', (m) => r2(String(m))));
    await rx.send('after the rebuild');
    expect(await reply).toBe('after the rebuild');
    expect(link.isOpen && peerLink.isOpen).toBe(true);
    // A channel opened after the rebuild gets a stream id of its own.
    const incoming2 = nextChannel(peerLink);
    const ch2 = await link.channel('later');
    const rx2 = await incoming2;
    const got2 = new Promise<string>((r2) => rx2.once('message', (m) => r2(String(m))));
    await ch2.send('second');
    expect(await got2).toBe('second');
  });

  it('the acceptor sends 20 MiB while the dialer rebuilds; an unreliable channel keeps working after it', async () => {
    const { link, peerLink } = await pair('native', 'native');
    const incoming = nextChannel(peerLink);
    const ch = await link.channel('bulk');
    const tx = await incoming;
    const incomingU = nextChannel(peerLink);
    const u = await link.channel('sensor', { ordered: false, maxRetransmits: 0 });
    const ru = await incomingU;
    const total = 20 * 1024 * 1024;
    const trigger = async (): Promise<void> => {
      const lost = interrupted(peerLink);
      peerLink.dropSignaling();
      await lost;
    };
    const r = await transferAcrossRebuild(tx, ch, total, 22, trigger, 400);
    expect(r.sha).toBe(sha256Of(total, 22));
    const got = new Promise<string>((res) => ru.on('message', (m) => String(m) === 'reading' && res('ok')));
    const pump = setInterval(() => void u.send('reading').catch(() => undefined), 20);
    try {
      expect(await got).toBe('ok');
    } finally {
      clearInterval(pump);
    }
  });
});


/** A proxy that rewrites the DTLS fingerprint in rebuild offers, or in every answer after the first (the answers to rebuilds). */
async function fingerprintSwapper(what: 'rebuild-offer' | 'later-answer'): Promise<string> {
  let answers = 0;
  const proxy = await jsonRewritingProxy(sig.url, (f) => {
    for (const d of signalsOf(f)) {
      const hit = what === 'rebuild-offer' ? d['kind'] === 'offer' && d['rebuild'] === true : d['kind'] === 'answer' && ++answers > 1;
      if (hit) d['sdp'] = withForeignFingerprint(String(d['sdp']));
    }
    return f;
  });
  proxies.push(proxy);
  return proxy.url;
}

describe.skipIf(!haveNative)('a rebuild cannot swap keys (room MITM)', () => {
  it.each([
    ['a rebuild offer reaching the acceptor', 'rebuild-offer', 'hub'],
    ['the answer to a rebuild reaching the dialer', 'later-answer', 'app'],
  ] as const)('%s with a rewritten DTLS fingerprint -> IdentityMismatch, both links closed, nothing left open', async (_name, what, proxied) => {
    const url = await fingerprintSwapper(what);
    const { hubEp, appEp, link, peerLink } = await pair('native', 'native', proxied === 'hub' ? url : undefined, proxied === 'app' ? url : undefined);
    const victim = proxied === 'hub' ? peerLink : link;
    const victimClosed = new Promise<string>((r) => victim.once('close', r));
    const otherClosed = new Promise<string>((r) => (victim === link ? peerLink : link).once('close', r));
    peerLink.dropSignaling();
    expect(await victimClosed).toMatch(/^IdentityMismatch: peer fingerprint changed/);
    // The victim's bye (reason identity) ends the other side too.
    await otherClosed;
    expect(link.isOpen || peerLink.isOpen).toBe(false);
    await new Promise((r) => setTimeout(r, 300));
    expect(hubEp.links).toHaveLength(0);
    expect(appEp.links).toHaveLength(0);
  });
});
