/** TURN over TLS with a self-signed certificate made for the test (openssl CLI). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StartedRelay } from '../../relay/index.js';
import { decodeChannelData, encodeChannelData } from '../../protocol/stun/index.js';
import { A, StunClass, StunMethod, restClient } from './helpers/turn-client.js';
import { StreamEndpoint, udpEcho } from './helpers/sockets.js';
import { selfSignedCertificate, startLoopbackRelay, type TestCertificate } from './helpers/relay.js';

const SECRET = 'tls-test-secret';
let cert: TestCertificate;
let relay: StartedRelay;
let echo: Awaited<ReturnType<typeof udpEcho>>;

beforeAll(async () => {
  cert = selfSignedCertificate('relay-tls-');
  relay = await startLoopbackRelay({
    secret: SECRET,
    relayPorts: [42000, 42099],
    config: { tlsPort: 0, tlsCert: cert.certPath, tlsKey: cert.keyPath },
  });
  echo = await udpEcho();
});

afterAll(async () => {
  await relay?.close();
  await echo?.close();
  cert?.dispose();
});

describe('TURN over TLS', () => {
  it('verifies against the certificate, allocates and relays through a channel', async () => {
    expect(relay.tls).toBeDefined();
    const ep = await StreamEndpoint.connectTls(relay.tls!.port, cert.ca);
    try {
      const c = restClient(SECRET, 'tls-endpoint');
      ep.send(c.request(StunMethod.Binding, [], false).bytes);
      expect(c.read(await ep.next()).mapped?.ip).toBe('127.0.0.1');
      ep.send(c.request(StunMethod.Allocate, [A.transportUdp()], false).bytes);
      expect(c.read(await ep.next()).code).toBe(401);
      ep.send(c.request(StunMethod.Allocate, [A.transportUdp()]).bytes);
      expect(c.read(await ep.next()).cls).toBe(StunClass.SuccessResponse);
      ep.send(c.request(StunMethod.ChannelBind, [A.channel(0x4100), A.peer('127.0.0.1', echo.port)]).bytes);
      expect(c.read(await ep.next()).cls).toBe(StunClass.SuccessResponse);
      ep.send(encodeChannelData(0x4100, new Uint8Array([1, 2, 3, 4, 5, 6, 7]), true));
      const back = decodeChannelData(await ep.next(), true);
      expect(back.ok && [...back.value.data]).toEqual([1, 2, 3, 4, 5, 6, 7]);
    } finally {
      ep.close();
    }
  });
});
