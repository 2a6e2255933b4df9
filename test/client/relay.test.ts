/**
 * Relayed links through our relay (relay/index.ts) with the real worker handing out TURN
 * credentials: forced relay with a tap proving only ciphertext crosses the relay, Happy Eyeballs
 * when UDP to the relay is black-holed, and the relay killed and restarted mid-transfer.
 */
import dgram from 'node:dgram';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import type { Endpoint } from '../../client/index.js';
import { endpointFor, nextChannel, nextLink, randomId, sha256Of, transfer, needsWerift, relayOnlyOnWerift } from './helpers.js';
import { TURN_SECRET, testRelay, type TestRelay } from './relay-helpers.js';

let relay: TestRelay;
let sig: SignalingHandle;
const endpoints: Endpoint[] = [];
const track = <T extends Endpoint>(e: T): T => (endpoints.push(e), e);
let seenMarker = false;
const MARKER = 'HOMELINK-PLAINTEXT-MARKER-7f3a9c';
const markerBytes = Buffer.from(MARKER);

beforeAll(async () => {
  relay = await testRelay(43000, 43999, (_d, p) => {
    if (Buffer.from(p.buffer, p.byteOffset, p.byteLength).includes(markerBytes)) seenMarker = true;
  });
  sig = await startSignaling({ relays: [relay.entry], turnSecret: TURN_SECRET, offlineWaitMs: 500 });
});
afterAll(async () => {
  await sig?.close();
  await relay?.close();
});
afterEach(() => {
  for (const e of endpoints.splice(0)) e.close();
});

async function relayedPair(s: SignalingHandle, extra = {}) {
  const home = randomId('home');
  const opts = { iceTransportPolicy: 'relay' as const, turnTlsOptions: { ca: relay.ca }, ...extra };
  const hub = track(await endpointFor(s, randomId('hub'), [home], opts));
  const app = track(await endpointFor(s, randomId('app'), [home], opts));
  const accepted = nextLink(hub);
  hub.on('request', (r) => void r.accept());
  const link = await app.dial(hub.id, { timeoutMs: 20_000 });
  return { hub, app, link, peerLink: await accepted };
}

describe('relayed links through our relay', () => {
  it.skipIf(relayOnlyOnWerift('forced relay: path is relay, 20 MiB passes, and the relay never sees the plaintext marker the peer receives'))('forced relay: path is relay, 20 MiB passes, and the relay never sees the plaintext marker the peer receives', async () => {
    const { link, peerLink } = await relayedPair(sig);
    expect(link.path?.kind).toBe('relay');
    expect(peerLink.path?.kind).toBe('relay');
    expect(link.path?.protocol).toBe('udp');
    const incoming = nextChannel(peerLink);
    const ch = await link.channel('bulk');
    const rx = await incoming;
    seenMarker = false;
    const got = new Promise<void>((resolve) => rx.on('message', (m) => typeof m === 'string' && m.includes(MARKER) && resolve()));
    for (let i = 0; i < 20; i++) await ch.send(`${MARKER} #${i}`);
    await got;
    const total = 20 * 1024 * 1024;
    expect(await transfer(ch, rx, total, 5)).toBe(sha256Of(total, 5));
    expect(await transfer(rx, ch, total, 6)).toBe(sha256Of(total, 6));
    expect(seenMarker).toBe(false);
  });

  // On the node-datachannel choice too: relay-only links, and links whose relay answers over TCP/TLS
  // first, are built on werift (client/index.ts, withNativeFallback).
  it.skipIf(relayOnlyOnWerift('UDP to the relay black-holed: the probe picks TURN over TCP and the link still connects'))('UDP to the relay black-holed: the probe picks TURN over TCP and the link still connects', async () => {
    const hole = dgram.createSocket('udp4'); // swallows everything, answers nothing
    await new Promise<void>((r) => hole.bind(0, '127.0.0.1', r));
    const holed = await startSignaling({
      relays: [{ ...relay.entry, udpPort: (hole.address() as { port: number }).port }],
      turnSecret: TURN_SECRET,
      offlineWaitMs: 500,
    });
    try {
      const { link } = await relayedPair(holed);
      expect(link.path?.kind).toBe('relay');
      expect(link.path?.protocol).toBe('tcp');
    } finally {
      for (const e of endpoints.splice(0)) e.close();
      await holed.close();
      hole.close();
    }
  });

  it.skipIf(relayOnlyOnWerift('relay killed and restarted mid-transfer: ICE restart through the room, SHA-256 matches'))('relay killed and restarted mid-transfer: ICE restart through the room, SHA-256 matches', async () => {
    const { link, peerLink } = await relayedPair(sig);
    const incoming = nextChannel(peerLink);
    const ch = await link.channel('bulk');
    const rx = await incoming;
    const total = 20 * 1024 * 1024;
    let interrupted = false;
    link.on('interrupted', () => (interrupted = true));
    const resumed = new Promise<void>((r) => link.once('resumed', r));
    const sending = transfer(ch, rx, total, 9);
    // Kill the relay once a few MiB went through, bring it back on the same ports.
    await new Promise<void>((resolve) => {
      let n = 0;
      const off = rx.on('message', () => {
        if (++n === 200) {
          off();
          resolve();
        }
      });
    });
    await relay.stop();
    await new Promise((r) => setTimeout(r, 500));
    await relay.start();
    expect(await sending).toBe(sha256Of(total, 9));
    await resumed;
    expect(interrupted).toBe(true);
    expect((await link.stats()).restarts).toBeGreaterThan(0);
  });

  it.skipIf(relayOnlyOnWerift('renews TURN credentials through the room before they expire (60 s TTL: renewal at half-life)'))('renews TURN credentials through the room before they expire (60 s TTL: renewal at half-life)', async () => {
    const shortTtl = await startSignaling({ relays: [relay.entry], turnSecret: TURN_SECRET, turnTtlSeconds: 60 });
    try {
      const { link, peerLink } = await relayedPair(shortTtl);
      const deadline = Date.now() + 45_000;
      while ((await link.stats()).credentialRenewals === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 500));
      expect((await link.stats()).credentialRenewals).toBe(1);
      // The peer renews on its own schedule, a moment apart: wait for it too (same bound).
      while ((await peerLink.stats()).credentialRenewals === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 500));
      expect((await peerLink.stats()).credentialRenewals).toBe(1);
      expect(link.isOpen).toBe(true);
    } finally {
      for (const e of endpoints.splice(0)) e.close();
      await shortTtl.close();
    }
  });
});
