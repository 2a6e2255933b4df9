/**
 * Bounded, deterministic fuzzing of the TURN core and the codec: 120,000 inputs
 * (mutated valid messages, random bytes, stream chunks, peer datagrams, time
 * jumps) with a fixed seed. No exception may escape, state stays bounded, and
 * the server still answers a Binding request afterwards.
 */
import { describe, expect, it } from 'vitest';
import {
  StreamFramer,
  decodeChannelData,
  decodeErrorCode,
  decodeLifetime,
  decodeNonce,
  decodeRealm,
  decodeRequestedAddressFamily,
  decodeStun,
  decodeUnknownAttributes,
  decodeUsername,
  decodeXorAddress,
  encodeChannelData,
} from '../../protocol/stun/index.js';
import { A, StunClass, StunMethod, TestTurnClient, restCredential } from './helpers/turn-client.js';
import { Harness, SECRET } from './helpers/virtual.js';

const SEED = 0x5eed1234;
const INPUTS = 120_000;

/** xorshift32: small, fast, deterministic. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  return {
    int: (n: number) => next() % n,
    bytes: (n: number) => {
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i++) b[i] = next() & 0xff;
      return b;
    },
  };
}

function mutate(r: ReturnType<typeof rng>, src: Uint8Array): Uint8Array {
  let b = src.slice();
  const ops = 1 + r.int(4);
  for (let k = 0; k < ops; k++) {
    switch (r.int(7)) {
      case 0: // flip bits
        if (b.length) b[r.int(b.length)]! ^= 1 << r.int(8);
        break;
      case 1: // truncate
        b = b.slice(0, r.int(b.length + 1));
        break;
      case 2: // append garbage
        b = Uint8Array.from([...b, ...r.bytes(r.int(40))]);
        break;
      case 3: // rewrite the message length
        if (b.length >= 4) {
          b[2] = r.int(256);
          b[3] = r.int(256);
        }
        break;
      case 4: // rewrite an attribute length somewhere
        if (b.length > 24) {
          const at = 20 + 4 * r.int((b.length - 20) >> 2);
          if (at + 3 < b.length) {
            b[at + 2] = r.int(256);
            b[at + 3] = r.int(256);
          }
        }
        break;
      case 5: // duplicate a slice
        if (b.length > 8) {
          const s = r.int(b.length - 4);
          b = Uint8Array.from([...b, ...b.subarray(s, s + 4 + r.int(16))]);
        }
        break;
      default: // random byte
        if (b.length) b[r.int(b.length)] = r.int(256);
    }
  }
  return b;
}

describe('fuzzing', () => {
  it(`the core survives ${INPUTS} hostile inputs and still answers Binding`, () => {
    const r = rng(SEED);
    const h = new Harness({ maxAllocations: 50, maxStreamBufferBytes: 70_000 });
    const clients = Array.from({ length: 6 }, (_, i) => {
      const c = restCredential(SECRET, `fuzz-${i}`, Math.floor(h.now / 1000) + 10 * 86400);
      return { ip: `198.51.100.${10 + i}`, port: 40000 + i, turn: new TestTurnClient(c.username, c.password) };
    });
    // Learn realm/nonce and allocate for each client so mutations reach deep states.
    for (const c of clients) {
      h.udp(c.ip, c.port, c.turn.request(StunMethod.Allocate, [A.transportUdp()], false).bytes);
      c.turn.read(h.take(`udp:${c.ip}:${c.port}`)[0]!);
      h.udp(c.ip, c.port, c.turn.request(StunMethod.Allocate, [A.transportUdp()]).bytes);
    }
    const corpus = (c: (typeof clients)[number]): Uint8Array[] => [
      c.turn.request(StunMethod.Binding, [], false).bytes,
      c.turn.request(StunMethod.Allocate, [A.transportUdp()]).bytes,
      c.turn.request(StunMethod.Refresh, [A.lifetime(600)]).bytes,
      c.turn.request(StunMethod.CreatePermission, [A.peer('198.18.1.2', 5000), A.peer('198.18.1.3', 5000)]).bytes,
      c.turn.request(StunMethod.ChannelBind, [A.channel(0x4000 + r.int(4)), A.peer('198.18.1.2', 5000 + r.int(3))]).bytes,
      c.turn.indication(StunMethod.Send, [A.peer('198.18.1.2', 5000), A.data(r.bytes(r.int(100)))]),
      encodeChannelData(0x4000 + r.int(4), r.bytes(r.int(200)), false),
    ];
    // Signing costs HMACs: rebuild each client's corpus every 2,000 inputs, after learning a fresh nonce.
    const corpora = new Map<(typeof clients)[number], Uint8Array[]>();
    const refresh = () => {
      for (const c of clients) {
        h.udp(c.ip, c.port, c.turn.request(StunMethod.Allocate, [A.transportUdp()], false).bytes);
        const answer = h.take(`udp:${c.ip}:${c.port}`);
        if (answer[0]) c.turn.read(answer[0]);
        corpora.set(c, corpus(c));
      }
    };
    let nextConn = 1;
    const open = new Set<number>();
    for (let i = 0; i < INPUTS; i++) {
      if (i % 2000 === 0) refresh();
      const c = clients[r.int(clients.length)]!;
      const items = corpora.get(c)!;
      const kind = r.int(100);
      if (kind < 35) {
        h.udp(c.ip, c.port, mutate(r, items[r.int(items.length)]!));
      } else if (kind < 50) {
        h.udp(c.ip, c.port, items[r.int(items.length)]!);
      } else if (kind < 65) {
        const b = r.bytes(r.int(120));
        if (b.length > 0 && r.int(2) === 0) b[0] = r.int(2) === 0 ? 0x40 : 0x00; // look like ChannelData/STUN
        h.udp(c.ip, c.port, b);
      } else if (kind < 82) {
        if (open.size < 4 || r.int(50) === 0) {
          const id = nextConn++;
          h.server.openStream(id, r.int(2) ? 'tcp' : 'tls', c.ip, 50000 + id, h.now);
          open.add(id);
        }
        const ids = [...open];
        const id = ids[r.int(ids.length)]!;
        const src = r.int(3) === 0 ? r.bytes(r.int(300)) : r.int(2) ? items[r.int(items.length)]! : mutate(r, items[r.int(items.length)]!);
        const cut = r.int(src.length + 1);
        h.stream(id, src.subarray(0, cut));
        h.stream(id, src.subarray(cut));
        for (const closed of h.closed.splice(0)) open.delete(closed);
        if (r.int(40) === 0) {
          h.server.closeStream(id);
          h.flush();
          open.delete(id);
        }
      } else if (kind < 98) {
        const ids = [...h.bound.keys()];
        const id = ids.length ? ids[r.int(ids.length)]! : 1;
        h.peer(id, r.int(2) ? '198.18.1.2' : `198.18.1.${r.int(5)}`, 5000 + r.int(3), r.bytes(r.int(300)));
      } else {
        h.advance(r.int(20_000));
      }
      h.sent.length = 0;
    }
    // The run reached deep states (allocations, channels, relayed data), and state stayed bounded.
    expect(h.server.counters.allocationsCreated).toBeGreaterThanOrEqual(6);
    expect(h.server.counters.packetsToPeer).toBeGreaterThan(100);
    expect(h.server.counters.packetsToClient).toBeGreaterThan(100);
    expect(h.server.allocationCount).toBeLessThanOrEqual(50);
    expect(h.server.counters.allocations).toBe(h.server.allocationCount);
    expect(h.server.counters.permissions).toBeGreaterThanOrEqual(0);
    expect(h.server.counters.channels).toBeGreaterThanOrEqual(0);
    expect(h.server.counters.dropMalformed).toBeGreaterThan(1000);
    // Still answering.
    const probe = new TestTurnClient('x', 'y');
    h.udp('198.51.100.200', 1234, probe.request(StunMethod.Binding, [], false).bytes);
    const answer = h.take('udp:198.51.100.200:1234');
    expect(answer.length).toBe(1);
    const res = probe.read(answer[0]!);
    expect(res.cls).toBe(StunClass.SuccessResponse);
    expect(res.mapped).toEqual({ family: 4, ip: '198.51.100.200', port: 1234 });
  });

  it('decoders never throw on random input', () => {
    const r = rng(SEED ^ 0xabcdef);
    const tid = r.bytes(12);
    const framer = new StreamFramer(70_000);
    for (let i = 0; i < 50_000; i++) {
      const b = r.bytes(r.int(64));
      if (b.length >= 8 && r.int(2) === 0) b.set([0x21, 0x12, 0xa4, 0x42], 4);
      decodeStun(b);
      decodeChannelData(b, r.int(2) === 0);
      decodeXorAddress(b, tid);
      decodeErrorCode(b);
      decodeLifetime(b);
      decodeUsername(b);
      decodeRealm(b);
      decodeNonce(b);
      decodeUnknownAttributes(b);
      decodeRequestedAddressFamily(b);
      const pushed = framer.push(b);
      if (pushed.ok) for (let f = framer.next(); f.ok && f.value; f = framer.next());
    }
  });
});
