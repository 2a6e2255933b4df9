/**
 * The relay probe's verdict reused (client/webrtc/turn-probe.ts): against our relay on loopback,
 * its UDP port reached through a forwarder this test can silence. A verdict that UDP answered
 * first is used by the next call without waiting, and that call probes again in the background;
 * so once UDP stops answering, one call gets the stale UDP-first order and the next one TURN over
 * TCP; a verdict that TCP answered first is never reused, so UDP coming back is seen at once.
 * The background probe holds nothing that keeps the process alive.
 */
import dgram from 'node:dgram';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { forgetProbeVerdicts, orderIceServers, PROBE_DEADLINE_MS } from '../../client/webrtc/turn-probe.js';
import type { IceServerConfig } from '../../client/webrtc/backend.js';
import { testRelay, type TestRelay } from './relay-helpers.js';

let relay: TestRelay;
let forwarder: dgram.Socket;
let silent = false;
let servers: IceServerConfig[];

beforeAll(async () => {
  relay = await testRelay(47000, 47099, () => undefined);
  // Client -> forwarder -> relay's UDP port and back, one upstream socket per client; while
  // `silent`, requests are dropped.
  forwarder = dgram.createSocket('udp4');
  await new Promise<void>((r) => forwarder.bind(0, '127.0.0.1', r));
  const upstreams = new Map<string, dgram.Socket>();
  forwarder.on('message', (m, from) => {
    if (silent) return;
    const id = `${from.address}:${from.port}`;
    let up = upstreams.get(id);
    if (!up) {
      up = dgram.createSocket('udp4');
      up.on('message', (back) => forwarder.send(back, from.port, from.address));
      upstreams.set(id, up);
    }
    up.send(m, relay.entry.udpPort, '127.0.0.1');
  });
  forwarder.once('close', () => {
    for (const up of upstreams.values()) up.close();
  });
  const udp = (forwarder.address() as { port: number }).port;
  servers = [
    { urls: [`stun:127.0.0.1:${udp}`] },
    { urls: [`turn:127.0.0.1:${udp}?transport=udp`, `turn:127.0.0.1:${relay.entry.tcpPort}?transport=tcp`], username: 'u', credential: 'p' },
  ];
});
afterAll(async () => {
  forwarder?.close();
  await relay?.close();
});
beforeEach(() => {
  forgetProbeVerdicts();
  silent = false;
});

const firstTurn = (out: IceServerConfig[]): string | undefined => out.flatMap((s) => s.urls).find((u) => u.startsWith('turn:'));

describe('orderIceServers verdict reuse', () => {
  it('reuses a UDP-first verdict without waiting, and a UDP that went silent costs one call the stale order', async () => {
    expect(firstTurn(await orderIceServers(servers))).toMatch(/transport=udp$/);
    silent = true;
    // Reused: UDP first although UDP no longer answers (a fresh probe would have picked TCP).
    expect(firstTurn(await orderIceServers(servers))).toMatch(/transport=udp$/);
    // The background probe of that call found TCP first; the next call waits for its own probe.
    await expect.poll(async () => firstTurn(await orderIceServers(servers)), { timeout: 3 * PROBE_DEADLINE_MS, interval: 200 }).toMatch(/transport=tcp$/);
    // A TCP-first verdict is not reused: UDP answering again is seen by the very next call.
    silent = false;
    expect(firstTurn(await orderIceServers(servers))).toMatch(/transport=udp$/);
  });

  it('a reused verdict\'s background probe keeps nothing alive that would hold the process', async () => {
    await orderIceServers(servers);
    // UDP silent: the refresh stays in flight (TCP at +30 ms, then the STUN grace) after the call.
    silent = true;
    const alive = (): string[] => process.getActiveResourcesInfo().filter((r) => r === 'UDPSocketWrap' || r === 'UDPWrap' || r === 'TCPSocketWrap' || r === 'TCPWrap' || r === 'Timeout');
    const before = alive().length;
    expect(firstTurn(await orderIceServers(servers))).toMatch(/transport=udp$/);
    expect(alive().length).toBe(before);
    // A probe that is waited for holds the process as before: its answer is needed.
    forgetProbeVerdicts();
    const waited = orderIceServers(servers);
    expect(alive().length).toBeGreaterThan(before);
    await waited;
  });

  it('a reused verdict orders the caller\'s URLs with the caller\'s credentials', async () => {
    await orderIceServers(servers);
    const again = await orderIceServers([servers[0]!, { ...servers[1]!, username: 'other', credential: 'secret-2' }]);
    expect(again[0]).toEqual({ urls: [servers[0]!.urls[0]] });
    expect(again[1]).toMatchObject({ username: 'other', credential: 'secret-2' });
    expect(again.flatMap((s) => s.urls)).toHaveLength(3);
  });
});
