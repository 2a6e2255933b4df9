/**
 * node-datachannel and libjuice's transaction pacing (client/webrtc/node-datachannel.ts,
 * `toNdcIceServers`). libjuice starts its STUN transactions, gathering and connectivity checks
 * alike, at least 50 ms apart (RFC 8445 §14.2 Ta), so every server transaction the offerer arms
 * with its offer delays the check it arms on the answer by one slot. A `stun:` URL at the address
 * of a UDP `turn:` server is such a transaction and is redundant: the Allocate success response
 * carries the server-reflexive address (RFC 8656 §7.3). These tests run two real native peers
 * through our real relay, behind a counting UDP forwarder, and check what reaches the relay.
 */
import dgram from 'node:dgram';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mintTurnCredential } from '../../protocol/turn-credentials.js';
import { Channel } from '../../client/channel.js';
import type { IceServerConfig, PeerBackend } from '../../client/webrtc/backend.js';
import { createNodeDatachannelBackend, loadNodeDatachannel, toNdcIceServers } from '../../client/webrtc/node-datachannel.js';
import { TURN_SECRET, testRelay, type TestRelay } from './relay-helpers.js';
import { within } from './helpers.js';

/** Bound on each step of the native pair below (each takes milliseconds). */
const STEP_MS = 30_000;
/** STUN message types (RFC 8489 §5, RFC 8656 §17): method and class bits of the first two bytes. */
const BINDING_REQUEST = 0x0001;
const ALLOCATE_REQUEST = 0x0003;

/**
 * A UDP forwarder in front of the relay's UDP port: one upstream socket per client address, so the
 * relay sees (and reports as XOR-MAPPED-ADDRESS) the upstream socket; counts requests by type.
 */
async function countingForwarder(target: number): Promise<{ port: number; counts: Map<number, number>; close(): void }> {
  const front = dgram.createSocket('udp4');
  const ups = new Map<string, dgram.Socket>();
  const counts = new Map<number, number>();
  front.on('message', (msg, from) => {
    // A STUN message starts with two zero bits and has the magic cookie at offset 4 (RFC 8489 §5).
    if (msg.length >= 20 && (msg[0]! & 0xc0) === 0 && msg.readUInt32BE(4) === 0x2112a442) {
      const type = msg.readUInt16BE(0);
      counts.set(type, (counts.get(type) ?? 0) + 1);
    }
    const key = `${from.address}:${from.port}`;
    let up = ups.get(key);
    if (!up) {
      const s = dgram.createSocket('udp4');
      s.on('message', (back) => front.send(back, from.port, from.address));
      s.bind(0, '127.0.0.1');
      ups.set(key, s);
      up = s;
    }
    up.send(msg, target, '127.0.0.1');
  });
  await new Promise<void>((r) => front.bind(0, '127.0.0.1', r));
  return {
    port: (front.address() as { port: number }).port,
    counts,
    close() {
      front.close();
      for (const s of ups.values()) s.close();
    },
  };
}

let relay: TestRelay;
beforeAll(async () => {
  relay = await testRelay(47000, 47199, () => undefined);
});
afterAll(async () => {
  await relay.close();
});

const open: Array<{ close(): unknown }> = [];
afterEach(async () => {
  for (const x of open.splice(0).reverse()) await x.close();
});

async function iceServersAt(port: number): Promise<IceServerConfig[]> {
  const c = await mintTurnCredential(TURN_SECRET, `pacing-${port}`, 600, Date.now() / 1000);
  return [
    { urls: [`stun:127.0.0.1:${port}`] },
    { urls: [`turn:127.0.0.1:${port}?transport=udp`, `turn:127.0.0.1:${relay.entry.tcpPort}?transport=tcp`], username: c.username, credential: c.credential },
  ];
}

describe('node-datachannel: no redundant STUN transaction ahead of the checks', () => {
  it('a stun: URL at a UDP turn: server address is left out; others stay', () => {
    const out = toNdcIceServers([
      { urls: ['stun:198.51.100.7:3478', 'stun:198.51.100.8:3478', 'stun:198.51.100.7:3479'] },
      { urls: ['turn:198.51.100.7:3478'], username: 'u', credential: 'p' },
    ]);
    expect(out).toEqual([
      { hostname: '198.51.100.8', port: 3478 },
      { hostname: '198.51.100.7', port: 3479 },
      { hostname: '198.51.100.7', port: 3478, username: 'u', password: 'p', relayType: 'TurnUdp' },
    ]);
    // A turn: URL without credentials cannot allocate, so the stun: server stays.
    expect(toNdcIceServers([{ urls: ['stun:198.51.100.7:3478', 'turn:198.51.100.7:3478'] }])).toEqual([{ hostname: '198.51.100.7', port: 3478 }]);
  });

  it('two native peers given stun: and turn: at the relay send it Allocates only, still gather srflx, and connect', async () => {
    if (!(await loadNodeDatachannel())) {
      console.log('skipped: needs node-datachannel (optional dependency not installed)');
      return;
    }
    const fwd = await countingForwarder(relay.entry.udpPort);
    open.push(fwd);
    const iceServers = await iceServersAt(fwd.port);
    const a: PeerBackend = await createNodeDatachannelBackend({ iceServers, hostAddresses: ['127.0.0.1'] });
    const b: PeerBackend = await createNodeDatachannelBackend({ iceServers, hostAddresses: ['127.0.0.1'] });
    open.push(a, b);
    const types: Record<'a' | 'b', string[]> = { a: [], b: [] };
    const gathered = (who: 'a' | 'b', p: PeerBackend, peer: PeerBackend): Promise<void> =>
      new Promise((resolve) => {
        p.onCandidate = (c) => {
          if (c === null) resolve();
          else types[who].push(/ typ (\w+)/.exec(c.candidate)?.[1] ?? '?');
          void peer.addCandidate(c).catch(() => undefined);
        };
      });
    const doneA = gathered('a', a, b);
    const doneB = gathered('b', b, a);
    const acc = new Promise<Channel>((r) => (b.onChannel = (ch) => r(new Channel(ch))));
    const ca = new Channel(a.createChannel('probe'));
    const answer = await b.acceptOffer(await a.createOffer());
    await a.acceptAnswer(answer);
    // Each step bounded: a hang (seen once in 11 CI runs, 120 s) names the step it stopped at.
    await within(() => `gathering done (a gathered: ${types.a.join(' ')}; b: ${types.b.join(' ')}; Allocates seen: ${fwd.counts.get(ALLOCATE_REQUEST) ?? 0})`, Promise.all([doneA, doneB]), STEP_MS);
    await within('channel open at the offerer', ca.opened(), STEP_MS);
    const cb = await within('channel at the answerer', acc, STEP_MS);
    const got = new Promise<string>((r) => cb.once('message', (m) => r(typeof m === 'string' ? m : 'bytes')));
    ca.send('over the direct pair');
    expect(await within('message at the answerer', got, STEP_MS)).toBe('over the direct pair');
    // Both gathered a server-reflexive candidate, learned from the allocation (no Binding was sent).
    expect(types.a).toContain('srflx');
    expect(types.b).toContain('srflx');
    expect(types.a).toContain('relay');
    expect(fwd.counts.get(ALLOCATE_REQUEST) ?? 0).toBeGreaterThanOrEqual(2);
    expect(fwd.counts.get(BINDING_REQUEST) ?? 0).toBe(0);
  });
});
