/**
 * libjuice (node-datachannel's ICE agent) never deletes its TURN allocation when a connection
 * closes; the native backend deletes it from the same 5-tuple after closing
 * (client/webrtc/turn-release.ts). Checked against our relay's live-allocations gauge on a
 * relay-to-relay loopback path (`relayedOnly`: own loopback addresses, relayed candidates only).
 */
import dgram from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintTurnCredential } from '../../protocol/turn-credentials.js';
import { createNodeDatachannelBackend, loadNodeDatachannel } from '../../client/webrtc/node-datachannel.js';
import { RELAYED_ONLY_HOSTS, RELAY_TO_RELAY_NATIVE, relayedOnly, TURN_SECRET, testRelay, type TestRelay } from './relay-helpers.js';

const native = (await loadNodeDatachannel()) !== null;
if (!native) console.log('skipped: needs node-datachannel (optional dependency not installed): closing a native relayed connection releases its TURN allocations');

let relay: TestRelay;
beforeAll(async () => {
  if (native) relay = await testRelay(47400, 47499, () => undefined, { metrics: true });
});
afterAll(async () => {
  await relay?.close();
});

async function gaugeReaches(value: number, boundMs: number): Promise<number> {
  const until = Date.now() + boundMs;
  let now = await relay.allocations();
  while (now !== value && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100));
    now = await relay.allocations();
  }
  return now;
}

describe.skipIf(!native)('node-datachannel: TURN allocations on close', () => {
  it('closing both ends of a relay-to-relay connection deletes both allocations at once (not after libjuice\'s 600 s lifetime)', async () => {
    const baseline = await relay.allocations();
    for (let round = 0; round < 3; round++) {
      const c = await mintTurnCredential(TURN_SECRET, `release-${round}`, 600, Date.now() / 1000);
      const iceServers = [{ urls: [`turn:127.0.0.1:${relay.entry.udpPort}`], username: c.username, credential: c.credential }];
      // Relayed candidates held (see RELAY_TO_RELAY_NATIVE in relay-helpers.ts).
      const factory = relayedOnly((o) => createNodeDatachannelBackend(o, RELAY_TO_RELAY_NATIVE));
      const a = await factory({ iceServers, hostAddresses: [RELAYED_ONLY_HOSTS.offerer] });
      const b = await factory({ iceServers, hostAddresses: [RELAYED_ONLY_HOSTS.answerer] });
      try {
        a.onCandidate = (x) => void b.addCandidate(x).catch(() => undefined);
        b.onCandidate = (x) => void a.addCandidate(x).catch(() => undefined);
        const opened = new Promise<void>((r) => (b.onChannel = (ch) => (ch.state === 'open' ? r() : (ch.onOpen = () => r()))));
        a.createChannel('probe');
        await a.acceptAnswer(await b.acceptOffer(await a.createOffer()));
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([opened, new Promise((_, rej) => (timer = setTimeout(() => rej(new Error('no channel within 10 s')), 10_000)))]).finally(() => clearTimeout(timer));
        expect((await a.selectedPair())?.local.type, 'relayed').toBe('relay');
        expect(await relay.allocations()).toBeGreaterThanOrEqual(baseline + 2);
      } finally {
        await a.close();
        await b.close();
      }
      // close() resolves after the release was confirmed or gave up (1 s); nothing is left to wait for.
      expect(await gaugeReaches(baseline, 500), `allocations after round ${round}`).toBe(baseline);
    }
  });

  it('a connection closed after the relay allocated but before libjuice reported the relayed candidate still deletes it', async () => {
    // A UDP hop in front of the relay that drops Allocate success responses: the relay holds the
    // allocation, libjuice never learns of it (no relayed candidate), as in a link closed during
    // gathering. One upstream socket per client address, so the release, sent from libjuice's
    // own port, reaches the relay on the allocation's 5-tuple.
    const hop = await dropAllocateSuccess(relay.entry.udpPort);
    const baseline = await relay.allocations();
    const c = await mintTurnCredential(TURN_SECRET, 'release-early', 600, Date.now() / 1000);
    const iceServers = [{ urls: [`turn:127.0.0.1:${hop.port}`], username: c.username, credential: c.credential }];
    const a = await createNodeDatachannelBackend({ iceServers, hostAddresses: ['127.0.0.1'] });
    const relayed: string[] = [];
    a.onCandidate = (x) => void (x && / typ relay /.test(x.candidate) && relayed.push(x.candidate));
    try {
      a.createChannel('probe');
      await a.createOffer();
      expect(await gaugeReaches(baseline + 1, 5_000), 'the relay allocated').toBe(baseline + 1);
      expect(hop.dropped(), 'Allocate success responses dropped').toBeGreaterThanOrEqual(1);
    } finally {
      await a.close();
      hop.close();
    }
    expect(relayed, 'no relayed candidate reached the application').toEqual([]);
    expect(await gaugeReaches(baseline, 500)).toBe(baseline);
  });
});

/** STUN Allocate success response (RFC 8489 §5: method 0x003, class success -> type 0x0103). */
const ALLOCATE_SUCCESS = 0x0103;

/** A UDP hop to the relay on 127.0.0.1 that forwards both ways but drops Allocate success responses. */
async function dropAllocateSuccess(relayPort: number): Promise<{ port: number; dropped(): number; close(): void }> {
  const front = dgram.createSocket('udp4');
  const upstream = new Map<string, dgram.Socket>();
  let dropped = 0;
  front.on('message', (msg, from) => {
    const key = `${from.address}:${from.port}`;
    let up = upstream.get(key);
    if (!up) {
      const sock = dgram.createSocket('udp4');
      sock.on('message', (back) => {
        if (back.length >= 20 && back.readUInt16BE(0) === ALLOCATE_SUCCESS) {
          dropped++;
          return;
        }
        front.send(back, from.port, from.address);
      });
      sock.bind(0, '127.0.0.1');
      upstream.set(key, (up = sock));
    }
    up.send(msg, relayPort, '127.0.0.1');
  });
  await new Promise<void>((r) => front.bind(0, '127.0.0.1', r));
  return {
    port: front.address().port,
    dropped: () => dropped,
    close() {
      front.close();
      for (const s of upstream.values()) s.close();
    },
  };
}
