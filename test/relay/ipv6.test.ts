/**
 * IPv6 relaying on real sockets: REQUESTED-ADDRESS-FAMILY IPv6 (RFC 8656 §7.2), a channel to an
 * echo peer on ::1, with the relay socket bound to relayHost6 rather than [::] (issue 9 item 6).
 */
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StartedRelay } from '../../relay/index.js';
import { Attr, decodeChannelData, encodeChannelData, encodeRequestedAddressFamily } from '../../protocol/stun/index.js';
import { A, StunClass, StunMethod, restClient } from './helpers/turn-client.js';
import { startLoopbackRelay } from './helpers/relay.js';
import { UdpEndpoint } from './helpers/sockets.js';

const SECRET = 'ipv6-test-secret';
let relay: StartedRelay;
let echo: dgram.Socket;

beforeAll(async () => {
  relay = await startLoopbackRelay({
    secret: SECRET,
    relayPorts: [45000, 45099],
    config: { advertisedAddresses: ['127.0.0.1', '::1'], relayHost6: '::1' },
  });
  echo = dgram.createSocket({ type: 'udp6', ipv6Only: true });
  echo.on('message', (m, r) => echo.send(m, r.port, r.address));
  await new Promise<void>((r) => echo.bind(0, '::1', r));
});

afterAll(async () => {
  await relay?.close();
  await new Promise<void>((r) => (echo ? echo.close(() => r()) : r()));
});

/** Local addresses of the IPv6 UDP sockets bound to `port`, from /proc/net/udp6 (only ::1 and :: are told apart). */
function udp6LocalAddresses(port: number): string[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  return readFileSync('/proc/net/udp6', 'latin1')
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/)[1] ?? '')
    .filter((local) => local.endsWith(':' + hexPort))
    .map((local) => {
      const addr = local.split(':')[0]!;
      if (/^0+$/.test(addr)) return '::';
      if (addr === '00000000000000000000000001000000') return '::1';
      return addr;
    });
}

describe('IPv6 allocations', () => {
  it('allocates an IPv6 relayed address and relays through a channel to an IPv6 peer', async () => {
    const ep = await UdpEndpoint.open();
    try {
      const c = restClient(SECRET, 'v6-endpoint');
      const family: [number, Uint8Array] = [Attr.RequestedAddressFamily, encodeRequestedAddressFamily(6)];
      ep.send(c.request(StunMethod.Allocate, [A.transportUdp(), family], false).bytes, relay.udp.port);
      expect(c.read(await ep.next()).code).toBe(401);
      ep.send(c.request(StunMethod.Allocate, [A.transportUdp(), family]).bytes, relay.udp.port);
      const alloc = c.read(await ep.next());
      expect(alloc.cls).toBe(StunClass.SuccessResponse);
      expect(alloc.relayed).toMatchObject({ family: 6, ip: '::1' });
      // The relay socket is bound to the configured relayHost6 (::1), not to every address ([::]).
      expect(udp6LocalAddresses(alloc.relayed!.port)).toEqual(['::1']);
      // An IPv4 peer on an IPv6 allocation: 443.
      ep.send(c.request(StunMethod.CreatePermission, [A.peer('127.0.0.1', 9)]).bytes, relay.udp.port);
      expect(c.read(await ep.next()).code).toBe(443);
      const port = echo.address().port;
      ep.send(c.request(StunMethod.ChannelBind, [A.channel(0x4321), A.peer('::1', port)]).bytes, relay.udp.port);
      expect(c.read(await ep.next()).cls).toBe(StunClass.SuccessResponse);
      ep.send(encodeChannelData(0x4321, new Uint8Array([6, 6, 6]), false), relay.udp.port);
      const back = decodeChannelData(await ep.next(), false);
      expect(back.ok && back.value.channel).toBe(0x4321);
      expect(back.ok && [...back.value.data]).toEqual([6, 6, 6]);
    } finally {
      await ep.close();
    }
  });
});
