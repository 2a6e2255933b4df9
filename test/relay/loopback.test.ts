import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StartedRelay } from '../../relay/index.js';
import { decodeChannelData, encodeChannelData } from '../../protocol/stun/index.js';
import { A, StunClass, StunMethod, restClient, type TestTurnClient } from './helpers/turn-client.js';
import { startLoopbackRelay } from './helpers/relay.js';
import { StreamEndpoint, UdpEndpoint, udpEcho } from './helpers/sockets.js';

const SECRET = 'loopback-test-secret';

let relay: StartedRelay;
let echo: Awaited<ReturnType<typeof udpEcho>>;
const relayed: Array<{ dir: string; payload: Uint8Array }> = [];

beforeAll(async () => {
  relay = await startLoopbackRelay({
    secret: SECRET,
    relayPorts: [40000, 40999],
    config: { metricsPort: 0 },
    hooks: { onRelayed: (dir, payload) => relayed.push({ dir, payload: payload.slice() }) },
  });
  echo = await udpEcho();
});

afterAll(async () => {
  await relay?.close();
  await echo?.close();
});

function client(id = 'endpoint-1'): TestTurnClient {
  return restClient(SECRET, id, 3600);
}

describe('relay on loopback sockets', () => {
  it('answers a Binding request over UDP with the source address', async () => {
    const ep = await UdpEndpoint.open();
    try {
      const c = client();
      ep.send(c.request(StunMethod.Binding, [], false).bytes, relay.udp.port);
      const r = c.read(await ep.next());
      expect(r.cls).toBe(StunClass.SuccessResponse);
      expect(r.mapped).toEqual({ family: 4, ip: '127.0.0.1', port: ep.port });
    } finally {
      await ep.close();
    }
  });

  it('allocates over UDP, binds a channel to an echo peer, relays both ways', async () => {
    const ep = await UdpEndpoint.open();
    try {
      const c = client();
      ep.send(c.request(StunMethod.Allocate, [A.transportUdp()], false).bytes, relay.udp.port);
      expect(c.read(await ep.next()).code).toBe(401);
      ep.send(c.request(StunMethod.Allocate, [A.transportUdp()]).bytes, relay.udp.port);
      const alloc = c.read(await ep.next());
      expect(alloc.cls).toBe(StunClass.SuccessResponse);
      expect(alloc.integrityOk).toBe(true);
      expect(alloc.relayed?.ip).toBe('127.0.0.1');
      expect(alloc.relayed!.port).toBeGreaterThanOrEqual(40000);
      expect(alloc.lifetime).toBe(600);

      // Send indication before a permission: dropped. Then CreatePermission, Send, Data indication back.
      ep.send(c.indication(StunMethod.Send, [A.peer('127.0.0.1', echo.port), A.data(new Uint8Array([1, 2, 3]))]), relay.udp.port);
      expect(await ep.silent(200)).toBe(true);
      ep.send(c.request(StunMethod.CreatePermission, [A.peer('127.0.0.1', echo.port)]).bytes, relay.udp.port);
      expect(c.read(await ep.next()).cls).toBe(StunClass.SuccessResponse);
      ep.send(c.indication(StunMethod.Send, [A.peer('127.0.0.1', echo.port), A.data(new Uint8Array([4, 5, 6]))]), relay.udp.port);
      const data = c.read(await ep.next());
      expect(data.method).toBe(StunMethod.Data);
      expect(data.peer).toEqual({ family: 4, ip: '127.0.0.1', port: echo.port });
      expect([...data.data!]).toEqual([4, 5, 6]);

      ep.send(c.request(StunMethod.ChannelBind, [A.channel(0x4001), A.peer('127.0.0.1', echo.port)]).bytes, relay.udp.port);
      expect(c.read(await ep.next()).cls).toBe(StunClass.SuccessResponse);
      const payload = new TextEncoder().encode('hello through the relay');
      ep.send(encodeChannelData(0x4001, payload, false), relay.udp.port);
      const back = decodeChannelData(await ep.next(), false);
      expect(back.ok && back.value.channel).toBe(0x4001);
      expect(back.ok && Buffer.from(back.value.data).toString()).toBe('hello through the relay');
      expect(relayed.some((r) => r.dir === 'to-peer' && Buffer.from(r.payload).toString() === 'hello through the relay')).toBe(true);
      expect(relayed.some((r) => r.dir === 'to-client' && Buffer.from(r.payload).toString() === 'hello through the relay')).toBe(true);

      ep.send(c.request(StunMethod.Refresh, [A.lifetime(0)]).bytes, relay.udp.port);
      expect(c.read(await ep.next()).lifetime).toBe(0);
    } finally {
      await ep.close();
    }
  });

  // RFC 8656 §7.2 (with RFC 8489 §6.3.1): a request sent again with the SAME transaction id is
  // a retransmission and gets the original answer; the same 5-tuple with a NEW transaction id
  // is a second Allocate and gets 437. turnutils_uclient does both: it re-sends the identical
  // bytes after 500 ms without an answer, and it closes sockets without deleting their
  // allocations, so a later socket the kernel gives the same ephemeral port sends a fresh
  // Allocate on a 5-tuple that still holds one (the 437 of test/relay/interop.test.ts).
  it('answers a retransmitted Allocate (same transaction id) as the original; a new transaction on that 5-tuple gets 437', async () => {
    let ep = await UdpEndpoint.open();
    const port = ep.port;
    try {
      const c = client('endpoint-retransmit');
      ep.send(c.request(StunMethod.Allocate, [A.transportUdp()], false).bytes, relay.udp.port);
      expect(c.read(await ep.next()).code).toBe(401);
      const req = c.request(StunMethod.Allocate, [A.transportUdp()]);
      // Twice back to back: the copy arrives while the relay port is still being bound.
      ep.send(req.bytes, relay.udp.port);
      ep.send(req.bytes, relay.udp.port);
      const first = c.read(await ep.next());
      expect(first.cls, `code ${first.code}`).toBe(StunClass.SuccessResponse);
      expect(Buffer.from(first.msg.transactionId)).toEqual(Buffer.from(req.tid));
      const answers = [first];
      for (let more = await ep.maybeNext(300); more !== null; more = await ep.maybeNext(300)) answers.push(c.read(more));
      // Once the allocation is active, a late copy (as after uclient's 500 ms timer).
      ep.send(req.bytes, relay.udp.port);
      answers.push(c.read(await ep.next()));
      for (const a of answers) {
        expect(a.cls, `code ${a.code}`).toBe(StunClass.SuccessResponse);
        expect(a.integrityOk).toBe(true);
        expect(Buffer.from(a.msg.transactionId)).toEqual(Buffer.from(req.tid));
        expect(a.relayed).toEqual(first.relayed);
      }
      // A new transaction on the same 5-tuple: a second allocation is refused.
      ep.send(c.request(StunMethod.Allocate, [A.transportUdp()]).bytes, relay.udp.port);
      expect(c.read(await ep.next()).code).toBe(437);
      // A new socket on the same local port, as the kernel may hand a closed socket's port on.
      await ep.close();
      ep = await UdpEndpoint.open(port);
      ep.send(c.request(StunMethod.Allocate, [A.transportUdp()]).bytes, relay.udp.port);
      expect(c.read(await ep.next()).code).toBe(437);
      // The allocation is still the first one: Refresh 0 from this 5-tuple deletes it, and then a new Allocate works.
      ep.send(c.request(StunMethod.Refresh, [A.lifetime(0)]).bytes, relay.udp.port);
      expect(c.read(await ep.next()).lifetime).toBe(0);
      ep.send(c.request(StunMethod.Allocate, [A.transportUdp()]).bytes, relay.udp.port);
      const again = c.read(await ep.next());
      expect(again.cls, `code ${again.code}`).toBe(StunClass.SuccessResponse);
      ep.send(c.request(StunMethod.Refresh, [A.lifetime(0)]).bytes, relay.udp.port);
      expect(c.read(await ep.next()).lifetime).toBe(0);
    } finally {
      await ep.close();
    }
  });

  it('refuses a loopback peer that is not allowed: the relay host itself via its own address', async () => {
    const ep = await UdpEndpoint.open();
    try {
      const c = client('endpoint-2');
      ep.send(c.request(StunMethod.Allocate, [A.transportUdp()], false).bytes, relay.udp.port);
      c.read(await ep.next());
      ep.send(c.request(StunMethod.Allocate, [A.transportUdp()]).bytes, relay.udp.port);
      expect(c.read(await ep.next()).cls).toBe(StunClass.SuccessResponse);
      ep.send(c.request(StunMethod.CreatePermission, [A.peer('10.0.0.1', 9)]).bytes, relay.udp.port);
      expect(c.read(await ep.next()).code).toBe(403);
      ep.send(c.request(StunMethod.CreatePermission, [A.peer('169.254.169.254', 80)]).bytes, relay.udp.port);
      expect(c.read(await ep.next()).code).toBe(403);
    } finally {
      await ep.close();
    }
  });

  it('allocates over TCP and relays padded ChannelData', async () => {
    const s = await StreamEndpoint.connect(relay.tcp.port);
    try {
      const c = client('endpoint-3');
      s.send(c.request(StunMethod.Allocate, [A.transportUdp()], false).bytes);
      expect(c.read(await s.next()).code).toBe(401);
      s.send(c.request(StunMethod.Allocate, [A.transportUdp()]).bytes);
      expect(c.read(await s.next()).cls).toBe(StunClass.SuccessResponse);
      s.send(c.request(StunMethod.ChannelBind, [A.channel(0x4abc), A.peer('127.0.0.1', echo.port)]).bytes);
      expect(c.read(await s.next()).cls).toBe(StunClass.SuccessResponse);
      const payload = new Uint8Array([9, 8, 7, 6, 5]); // 5 bytes: padded to 8 on the stream
      // Two frames in one write, and one split across writes.
      const f = encodeChannelData(0x4abc, payload, true);
      s.send(Buffer.concat([f, f.subarray(0, 3)]));
      s.send(f.subarray(3));
      for (let i = 0; i < 2; i++) {
        const frame = await s.next();
        expect(frame.length).toBe(12);
        const d = decodeChannelData(frame, true);
        expect(d.ok && [...d.value.data]).toEqual([9, 8, 7, 6, 5]);
      }
    } finally {
      s.close();
    }
  });
});

describe('allocation to allocation on this relay (hairpin)', () => {
  it('a UDP client and a TCP client, each bound to the other\'s relayed address, reach each other; the packets never leave the relay process', async () => {
    const ep = await UdpEndpoint.open();
    const s = await StreamEndpoint.connect(relay.tcp.port);
    const hairpins = async (): Promise<number> => Number(/^homelink_relay_hairpin_packets_total (\d+)/m.exec(await (await fetch(`${relay.metricsUrl}/metrics`)).text())?.[1]);
    try {
      const before = await hairpins();
      const u = client('endpoint-hairpin-udp');
      ep.send(u.request(StunMethod.Allocate, [A.transportUdp()], false).bytes, relay.udp.port);
      u.read(await ep.next());
      ep.send(u.request(StunMethod.Allocate, [A.transportUdp()]).bytes, relay.udp.port);
      const uRelayed = u.read(await ep.next()).relayed!;
      const t = client('endpoint-hairpin-tcp');
      s.send(t.request(StunMethod.Allocate, [A.transportUdp()], false).bytes);
      t.read(await s.next());
      s.send(t.request(StunMethod.Allocate, [A.transportUdp()]).bytes);
      const tRelayed = t.read(await s.next()).relayed!;
      ep.send(u.request(StunMethod.ChannelBind, [A.channel(0x4001), A.peer(tRelayed.ip, tRelayed.port)]).bytes, relay.udp.port);
      expect(u.read(await ep.next()).cls).toBe(StunClass.SuccessResponse);
      s.send(t.request(StunMethod.ChannelBind, [A.channel(0x4ffe), A.peer(uRelayed.ip, uRelayed.port)]).bytes);
      expect(t.read(await s.next()).cls).toBe(StunClass.SuccessResponse);

      relayed.length = 0;
      const big = new Uint8Array(1200).map((_, i) => i & 0xff);
      for (let i = 0; i < 3; i++) {
        ep.send(encodeChannelData(0x4001, big, false), relay.udp.port);
        const got = decodeChannelData(await s.next(), true);
        expect(got.ok && got.value.channel).toBe(0x4ffe);
        expect(got.ok && Buffer.from(got.value.data).equals(Buffer.from(big))).toBe(true);
        s.send(encodeChannelData(0x4ffe, new Uint8Array([i, 1, 2]), true));
        const back = decodeChannelData(await ep.next(), false);
        expect(back.ok && back.value.channel).toBe(0x4001);
        expect(back.ok && [...back.value.data]).toEqual([i, 1, 2]);
      }
      expect((await hairpins()) - before).toBe(6);
      // The test hook still sees each payload once each way.
      expect(relayed.filter((r) => r.dir === 'to-peer').length).toBe(6);
      expect(relayed.filter((r) => r.dir === 'to-client').length).toBe(6);
      ep.send(u.request(StunMethod.Refresh, [A.lifetime(0)]).bytes, relay.udp.port);
      expect(u.read(await ep.next()).lifetime).toBe(0);
    } finally {
      s.close();
      await ep.close();
    }
  });
});

describe('metrics and health', () => {
  it('serves Prometheus text with the core counters and a health report', async () => {
    expect(relay.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const text = await (await fetch(`${relay.metricsUrl}/metrics`)).text();
    expect(text).toMatch(/homelink_relay_allocations_created_total [1-9]/);
    expect(text).toMatch(/homelink_relay_packets_total\{direction="to_peer"\} [1-9]/);
    expect(text).toMatch(/homelink_relay_peers_denied_total\{reason="private"\} [1-9]/);
    expect(text).not.toContain(SECRET);
    const health = await fetch(`${relay.metricsUrl}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ ok: true, draining: false });
  });
});
