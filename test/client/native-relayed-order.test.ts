/**
 * Relayed dials on node-datachannel (client/webrtc/node-datachannel.ts, "Why relayed connects
 * stalled"): libdatachannel starts its DTLS transport only once its own ICE agent is connected,
 * and a ClientHello that reaches the DTLS server before then is often left unread until the
 * client retransmits it, 1 s later. On a relayed path the first relayed check of either side is
 * dropped by the relay (the other side's allocation has no permission for it yet), so the side
 * that checks second connects first; the native offerer (the DTLS client) can therefore hold its
 * relayed candidates back until its own checks have left (`orderReflexiveChecks`, off by default
 * since it cost whole dials in the NAT lab; turned on here to hold the mechanism).
 *
 * Two real native peers, real relay, real sockets: a relay-to-relay path on loopback
 * (`relayedOnly`: own loopback addresses, only relayed candidates announced). What is checked is
 * the mechanism, not a time: the relay forwards exactly one ClientHello per dial (no DTLS
 * retransmission), and the DTLS server's ICE agent is connected before the client's.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintTurnCredential } from '../../protocol/turn-credentials.js';
import type { PeerBackend } from '../../client/webrtc/backend.js';
import { createNodeDatachannelBackend, loadNodeDatachannel } from '../../client/webrtc/node-datachannel.js';
import { RELAYED_ONLY_HOSTS, RELAY_TO_RELAY_NATIVE, relayedOnly, TURN_SECRET, testRelay, type TestRelay } from './relay-helpers.js';

/** DTLS record: content type 22 (handshake, RFC 6347 §4.1), handshake type 1 (ClientHello) after the 13-byte header. */
const isClientHello = (p: Uint8Array): boolean => p.length > 13 && p[0] === 22 && p[13] === 1;
const DIALS = 6;

let relay: TestRelay;
let clientHellos = 0;
beforeAll(async () => {
  relay = await testRelay(47200, 47399, (dir, p) => {
    if (dir === 'to-client' && isClientHello(p)) clientHellos++;
  });
});
afterAll(async () => {
  await relay?.close();
});

interface DialResult {
  clientHellos: number;
  /** performance.now() when each side's ICE agent said `connected`. */
  iceConnected: { offerer?: number; answerer?: number };
  kinds: string[];
}

/** libdatachannel's ICE state, read from the bindings under our backend (the backend contract has no such event). */
function onIceConnected(b: PeerBackend, cb: () => void): void {
  (b as unknown as { pc: { onIceStateChange(f: (s: string) => void): void } }).pc.onIceStateChange((s) => {
    if (s === 'connected') cb();
  });
}

async function relayedDial(n: number): Promise<DialResult> {
  const c = await mintTurnCredential(TURN_SECRET, `relayed-order-${n}`, 600, Date.now() / 1000);
  const iceServers = [{ urls: [`turn:127.0.0.1:${relay.entry.udpPort}`], username: c.username, credential: c.credential }];
  const factory = relayedOnly((o) => createNodeDatachannelBackend(o, RELAY_TO_RELAY_NATIVE));
  const a = await factory({ iceServers, hostAddresses: [RELAYED_ONLY_HOSTS.offerer] });
  const b = await factory({ iceServers, hostAddresses: [RELAYED_ONLY_HOSTS.answerer] });
  const res: DialResult = { clientHellos: 0, iceConnected: {}, kinds: [] };
  try {
    onIceConnected(a, () => (res.iceConnected.offerer ??= performance.now()));
    onIceConnected(b, () => (res.iceConnected.answerer ??= performance.now()));
    a.onCandidate = (x) => void b.addCandidate(x).catch(() => undefined);
    b.onCandidate = (x) => void a.addCandidate(x).catch(() => undefined);
    const opened = new Promise<void>((r) => (b.onChannel = (ch) => (ch.state === 'open' ? r() : (ch.onOpen = () => r()))));
    const ch = a.createChannel('probe');
    const openedA = new Promise<void>((r) => (ch.state === 'open' ? r() : (ch.onOpen = () => r())));
    clientHellos = 0;
    await a.acceptAnswer(await b.acceptOffer(await a.createOffer()));
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all([opened, openedA]),
      new Promise((_, rej) => (timer = setTimeout(() => rej(new Error('no channel within 10 s')), 10_000))),
    ]).finally(() => clearTimeout(timer));
    res.clientHellos = clientHellos;
    for (const p of [a, b]) {
      const pair = await p.selectedPair();
      res.kinds.push(`${pair?.local.type}-${pair?.remote.type}`);
    }
    return res;
  } finally {
    await a.close();
    await b.close();
  }
}

describe('node-datachannel, relayed dials: the DTLS server is connected before the ClientHello arrives', () => {
  it(`over ${DIALS} relay-to-relay dials: one ClientHello each (no DTLS retransmission), the answerer (DTLS server) connected first`, async () => {
    if (!(await loadNodeDatachannel())) {
      console.log('skipped: needs node-datachannel (optional dependency not installed)');
      return;
    }
    const results: DialResult[] = [];
    for (let i = 0; i < DIALS; i++) results.push(await relayedDial(i));
    // The path really is relayed on both ends.
    expect(results.map((r) => r.kinds)).toEqual(results.map(() => ['relay-relay', 'relay-relay']));
    // The DTLS server (the native answerer answers `passive`) became ICE-connected before the client.
    const order = results.map((r) => (r.iceConnected.answerer! < r.iceConnected.offerer! ? 'server first' : 'client first'));
    expect(order).toEqual(results.map(() => 'server first'));
    // So the client's first ClientHello was read: the relay carried exactly one per dial.
    expect(results.map((r) => r.clientHellos)).toEqual(results.map(() => 1));
  });
});
