/**
 * Multi-process mode: two worker processes sharing one UDP, one TCP and one TLS
 * port (SO_REUSEPORT), each with a disjoint relay port slice; the primary
 * serves the sum of their counters. Which worker served a client shows in its
 * relayed port (worker i allocates from slice i).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StartedRelay } from '../../relay/index.js';
import { portSlice } from '../../relay/node/workers.js';
import { A, StunClass, StunMethod, restClient, type TestTurnClient } from './helpers/turn-client.js';
import { StreamEndpoint, UdpEndpoint, udpEcho } from './helpers/sockets.js';
import { decodeChannelData, encodeChannelData } from '../../protocol/stun/index.js';
import { selfSignedCertificate, startLoopbackRelay, type TestCertificate } from './helpers/relay.js';

const SECRET = 'workers-test-secret';
let relay: StartedRelay;
let cert: TestCertificate;

beforeAll(async () => {
  cert = selfSignedCertificate('relay-workers-');
  relay = await startLoopbackRelay({
    secret: SECRET,
    relayPorts: [43000, 43099],
    config: { tlsPort: 0, tlsCert: cert.certPath, tlsKey: cert.keyPath, metricsPort: 0, workers: 2 },
  });
}, 60_000);

afterAll(async () => {
  await relay?.close();
  cert?.dispose();
});

function client(id: string): TestTurnClient {
  return restClient(SECRET, id);
}

/** Allocates over UDP on the shared port (the 401 challenge, then with credentials); the relayed address. */
async function allocateUdp(ep: UdpEndpoint, c: TestTurnClient): Promise<{ ip: string; port: number }> {
  ep.send(c.request(StunMethod.Allocate, [A.transportUdp()], false).bytes, relay.udp.port);
  expect(c.read(await ep.next(10_000)).code).toBe(401);
  ep.send(c.request(StunMethod.Allocate, [A.transportUdp()]).bytes, relay.udp.port);
  const r = c.read(await ep.next(10_000));
  expect(r.cls).toBe(StunClass.SuccessResponse);
  return { ip: r.relayed!.ip, port: r.relayed!.port };
}

describe('workers: 2', () => {
  it('splits relay ports into disjoint slices', () => {
    expect(portSlice(43000, 43099, 0, 2)).toEqual({ min: 43000, max: 43049 });
    expect(portSlice(43000, 43099, 1, 2)).toEqual({ min: 43050, max: 43099 });
    expect(portSlice(1000, 1010, 2, 3)).toEqual({ min: 1006, max: 1010 });
  });

  it('many UDP clients on the one advertised port all allocate and relay, and both workers serve some', async () => {
    const echo = await udpEcho();
    const clients = 24;
    const slices = [0, 0];
    try {
      await Promise.all(
        Array.from({ length: clients }, async (_, i) => {
          const ep = await UdpEndpoint.open();
          try {
            const c = client(`udp-client-${i}`);
            const port = (await allocateUdp(ep, c)).port;
            expect(port).toBeGreaterThanOrEqual(43000);
            expect(port).toBeLessThanOrEqual(43099);
            slices[port <= 43049 ? 0 : 1]!++;
            // Relay data: a channel to the echo peer, one round trip.
            ep.send(c.request(StunMethod.ChannelBind, [A.channel(0x4000 + i), A.peer('127.0.0.1', echo.port)]).bytes, relay.udp.port);
            expect(c.read(await ep.next(10_000)).cls).toBe(StunClass.SuccessResponse);
            const payload = new Uint8Array([i, 1, 2, 3]);
            ep.send(encodeChannelData(0x4000 + i, payload, false), relay.udp.port);
            const back = decodeChannelData(await ep.next(10_000), false);
            expect(back.ok && [...back.value.data]).toEqual([...payload]);
          } finally {
            await ep.close();
          }
        }),
      );
    } finally {
      await echo.close();
    }
    // Every client was served on the one port; the kernel spread them over both workers
    // (all 24 on one worker by chance: probability 2^-23).
    expect(slices[0]! + slices[1]!).toBe(clients);
    expect(slices[0]).toBeGreaterThan(0);
    expect(slices[1]).toBeGreaterThan(0);
  });

  it('serves TURN over the shared TCP port, from both workers', async () => {
    const slices = [0, 0];
    const held: StreamEndpoint[] = [];
    try {
      for (let i = 0; i < 16; i++) {
        const s = await StreamEndpoint.connect(relay.tcp.port);
        held.push(s);
        const c = client(`tcp-client-${i}`);
        s.send(c.request(StunMethod.Allocate, [A.transportUdp()], false).bytes);
        expect(c.read(await s.next(10_000)).code).toBe(401);
        s.send(c.request(StunMethod.Allocate, [A.transportUdp()]).bytes);
        const r = c.read(await s.next(10_000));
        expect(r.cls).toBe(StunClass.SuccessResponse);
        slices[r.relayed!.port <= 43049 ? 0 : 1]!++;
      }
    } finally {
      for (const s of held) s.close();
    }
    // 16 connections, all on one worker by chance: probability 2^-15.
    expect(slices[0]).toBeGreaterThan(0);
    expect(slices[1]).toBeGreaterThan(0);
  });

  it('terminates TLS in the workers behind the shared TLS port', async () => {
    expect(relay.tls).toBeDefined();
    for (let i = 0; i < 3; i++) {
      const ep = await StreamEndpoint.connectTls(relay.tls!.port, cert.ca);
      try {
        const c = client(`tls-client-${i}`);
        ep.send(c.request(StunMethod.Binding, [], false).bytes);
        expect(c.read(await ep.next()).mapped?.ip).toBe('127.0.0.1');
      } finally {
        ep.close();
      }
    }
  });

  it('the primary serves the counters summed over workers, and health', async () => {
    expect(relay.metricsUrl).toBeDefined();
    // Workers push counters every second: poll, bounded.
    let created = 0;
    for (let i = 0; i < 50 && created < 24 + 16; i++) {
      const text = await (await fetch(`${relay.metricsUrl}/metrics`)).text();
      created = Number(/homelink_relay_allocations_created_total (\d+)/.exec(text)?.[1] ?? 0);
      if (created < 24 + 16) await new Promise((r) => setTimeout(r, 200));
    }
    expect(created).toBe(24 + 16);
    const health = await (await fetch(`${relay.metricsUrl}/health`)).json();
    expect(health).toMatchObject({ ok: true, workers: 2, alive: 2 });
  });

  it('two clients whose allocations landed on different workers talk allocation to allocation (through the kernel)', async () => {
    // Both ends behind UDP-blocking firewalls each name the other's relayed address; the packets
    // go from one worker's relay socket to the other's. (On loopback this relay admits every
    // loopback peer, as a lab relay does; the policy side, a sibling worker's port admitted on a
    // public relay address, is test/natlab/relay-workers.test.ts's and turn-server.test.ts's.)
    const eps: UdpEndpoint[] = [];
    const bySlice: ({ ep: UdpEndpoint; c: TestTurnClient; ip: string; port: number } | undefined)[] = [undefined, undefined];
    try {
      // The kernel hashes each client to a worker: 40 clients all on one worker by chance, 2^-39.
      for (let i = 0; i < 40 && (!bySlice[0] || !bySlice[1]); i++) {
        const ep = await UdpEndpoint.open();
        eps.push(ep);
        const c = client(`cross-worker-${i}`);
        const relayed = await allocateUdp(ep, c);
        bySlice[relayed.port <= 43049 ? 0 : 1] ??= { ep, c, ...relayed };
      }
      const [a, b] = [bySlice[0]!, bySlice[1]!];
      a.ep.send(a.c.request(StunMethod.ChannelBind, [A.channel(0x4000), A.peer(b.ip, b.port)]).bytes, relay.udp.port);
      expect(a.c.read(await a.ep.next(10_000)).cls).toBe(StunClass.SuccessResponse);
      b.ep.send(b.c.request(StunMethod.ChannelBind, [A.channel(0x4001), A.peer(a.ip, a.port)]).bytes, relay.udp.port);
      expect(b.c.read(await b.ep.next(10_000)).cls).toBe(StunClass.SuccessResponse);
      a.ep.send(encodeChannelData(0x4000, new Uint8Array([1, 2, 3]), false), relay.udp.port);
      const atB = decodeChannelData(await b.ep.next(10_000), false);
      expect(atB.ok && [atB.value.channel, ...atB.value.data]).toEqual([0x4001, 1, 2, 3]);
      b.ep.send(encodeChannelData(0x4001, new Uint8Array([4, 5]), false), relay.udp.port);
      const atA = decodeChannelData(await a.ep.next(10_000), false);
      expect(atA.ok && [atA.value.channel, ...atA.value.data]).toEqual([0x4000, 4, 5]);
    } finally {
      await Promise.all(eps.map((e) => e.close()));
    }
  });

  it('refuses to start a second relay on ports a relay already holds (SO_REUSEPORT would share them silently)', async () => {
    const err = await startLoopbackRelay({
      secret: SECRET,
      relayPorts: [43100, 43199],
      config: { workers: 2, udpPort: relay.udp.port, tcpPort: relay.tcp.port },
    }).then(
      (r) => r.close().then(() => null),
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/^udpPort: UDP port \d+ on 127\.0\.0\.1 is in use/);
  });

  it('reports a worker that dies on its own (last: it breaks the relay)', async () => {
    expect(relay.failure).toBeDefined();
    const pid = (relay as unknown as { pids: number[] }).pids[1]!;
    process.kill(pid, 'SIGKILL');
    const err = await Promise.race([relay.failure!, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no failure reported')), 5000))]);
    expect(err.message).toMatch(/worker 1 exited unexpectedly/);
    const health = await fetch(`${relay.metricsUrl}/health`);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ ok: false, alive: 1 });
  });
});
