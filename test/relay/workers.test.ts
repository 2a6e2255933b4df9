/**
 * Multi-process mode: two worker processes, each with its own UDP port and a
 * disjoint relay port slice, sharing one TCP listener; the primary serves the
 * sum of their counters.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StartedRelay } from '../../relay/index.js';
import { portSlice } from '../../relay/node/workers.js';
import { A, StunClass, StunMethod, restClient, type TestTurnClient } from './helpers/turn-client.js';
import { StreamEndpoint, UdpEndpoint } from './helpers/sockets.js';
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

describe('workers: 2', () => {
  it('splits relay ports into disjoint slices', () => {
    expect(portSlice(43000, 43099, 0, 2)).toEqual({ min: 43000, max: 43049 });
    expect(portSlice(43000, 43099, 1, 2)).toEqual({ min: 43050, max: 43099 });
    expect(portSlice(1000, 1010, 2, 3)).toEqual({ min: 1006, max: 1010 });
  });

  it('each worker allocates on its own UDP port from its own slice', async () => {
    expect(relay.udpAll).toHaveLength(2);
    expect(new Set(relay.udpAll!.map((u) => u.port)).size).toBe(2);
    const relayed: number[] = [];
    for (const [i, udp] of relay.udpAll!.entries()) {
      const ep = await UdpEndpoint.open();
      try {
        const c = client(`worker-client-${i}`);
        ep.send(c.request(StunMethod.Allocate, [A.transportUdp()], false).bytes, udp.port);
        expect(c.read(await ep.next()).code).toBe(401);
        ep.send(c.request(StunMethod.Allocate, [A.transportUdp()]).bytes, udp.port);
        const r = c.read(await ep.next());
        expect(r.cls).toBe(StunClass.SuccessResponse);
        relayed.push(r.relayed!.port);
      } finally {
        await ep.close();
      }
    }
    expect(relayed[0]).toBeGreaterThanOrEqual(43000);
    expect(relayed[0]).toBeLessThanOrEqual(43049);
    expect(relayed[1]).toBeGreaterThanOrEqual(43050);
    expect(relayed[1]).toBeLessThanOrEqual(43099);
  });

  it('serves TURN over the shared TCP listener', async () => {
    for (let i = 0; i < 4; i++) {
      const s = await StreamEndpoint.connect(relay.tcp.port);
      try {
        const c = client(`tcp-client-${i}`);
        s.send(c.request(StunMethod.Allocate, [A.transportUdp()], false).bytes);
        expect(c.read(await s.next()).code).toBe(401);
        s.send(c.request(StunMethod.Allocate, [A.transportUdp()]).bytes);
        expect(c.read(await s.next()).cls).toBe(StunClass.SuccessResponse);
      } finally {
        s.close();
      }
    }
  });

  it('terminates TLS in the workers behind the shared listener', async () => {
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
    for (let i = 0; i < 50 && created < 6; i++) {
      const text = await (await fetch(`${relay.metricsUrl}/metrics`)).text();
      created = Number(/homelink_relay_allocations_created_total (\d+)/.exec(text)?.[1] ?? 0);
      if (created < 6) await new Promise((r) => setTimeout(r, 200));
    }
    expect(created).toBe(6);
    const health = await (await fetch(`${relay.metricsUrl}/health`)).json();
    expect(health).toMatchObject({ ok: true, workers: 2, alive: 2 });
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
