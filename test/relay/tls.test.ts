/** TURN over TLS with a self-signed certificate made for the test (openssl CLI). */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relayConfig, startRelay, type StartedRelay } from '../../relay/index.js';
import { StreamFramer, decodeChannelData, encodeChannelData } from '../../relay/stun/index.js';
import { A, StunClass, StunMethod, TestTurnClient, restCredential } from './helpers/turn-client.js';
import { udpEcho } from './helpers/sockets.js';

const SECRET = 'tls-test-secret';
let dir: string;
let relay: StartedRelay;
let echo: Awaited<ReturnType<typeof udpEcho>>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'relay-tls-'));
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
  ], { stdio: 'ignore' });
  relay = await startRelay(
    relayConfig({
      secrets: [SECRET],
      listenHost: '127.0.0.1',
      relayHost: '127.0.0.1',
      udpPort: 0,
      tcpPort: 0,
      tlsPort: 0,
      tlsCert: join(dir, 'cert.pem'),
      tlsKey: join(dir, 'key.pem'),
      metricsPort: null,
      allowLoopback: true,
      relayPortMin: 42000,
      relayPortMax: 42099,
      shutdownDrainMs: 0,
      logLevel: 'silent',
    }),
  );
  echo = await udpEcho();
});

afterAll(async () => {
  await relay?.close();
  await echo?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('TURN over TLS', () => {
  it('verifies against the certificate, allocates and relays through a channel', async () => {
    expect(relay.tls).toBeDefined();
    const sock = tls.connect({ host: '127.0.0.1', port: relay.tls!.port, ca: readFileSync(join(dir, 'cert.pem')) });
    await new Promise<void>((resolve, reject) => {
      sock.once('secureConnect', resolve);
      sock.once('error', reject);
    });
    const framer = new StreamFramer(70_000);
    const frames: Uint8Array[] = [];
    let wake: (() => void) | null = null;
    sock.on('data', (chunk: Buffer) => {
      framer.push(chunk);
      for (let r = framer.next(); r.ok && r.value; r = framer.next()) frames.push(r.value.bytes.slice());
      wake?.();
    });
    const next = async (): Promise<Uint8Array> => {
      const deadline = Date.now() + 3000;
      while (frames.length === 0) {
        if (Date.now() > deadline) throw new Error('timed out waiting for a frame');
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 100);
        });
      }
      return frames.shift()!;
    };
    try {
      const cred = restCredential(SECRET, 'tls-endpoint', Math.floor(Date.now() / 1000) + 600);
      const c = new TestTurnClient(cred.username, cred.password);
      sock.write(c.request(StunMethod.Binding, [], false).bytes);
      expect(c.read(await next()).mapped?.ip).toBe('127.0.0.1');
      sock.write(c.request(StunMethod.Allocate, [A.transportUdp()], false).bytes);
      expect(c.read(await next()).code).toBe(401);
      sock.write(c.request(StunMethod.Allocate, [A.transportUdp()]).bytes);
      expect(c.read(await next()).cls).toBe(StunClass.SuccessResponse);
      sock.write(c.request(StunMethod.ChannelBind, [A.channel(0x4100), A.peer('127.0.0.1', echo.port)]).bytes);
      expect(c.read(await next()).cls).toBe(StunClass.SuccessResponse);
      sock.write(encodeChannelData(0x4100, new Uint8Array([1, 2, 3, 4, 5, 6, 7]), true));
      const back = decodeChannelData(await next(), true);
      expect(back.ok && [...back.value.data]).toEqual([1, 2, 3, 4, 5, 6, 7]);
    } finally {
      sock.destroy();
    }
  });
});
