/**
 * Our relay (relay/index.ts) for client tests: TURN over UDP, TCP and TLS on loopback with a
 * throw-away self-signed certificate, restartable on the same ports, with a tap on every payload
 * it forwards.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { relayConfig, startRelay, type StartedRelay } from '../../relay/index.js';
import type { RelayEntry } from '../../worker/config.js';

export const TURN_SECRET = 'client-suite-turn-secret-0123456789abcdef';

export interface TestRelay {
  entry: RelayEntry;
  /** PEM of the relay's TLS certificate, to trust for `turns:`. */
  ca: string;
  /** Every payload forwarded, as seen by the relay (cleared by the test when it wants). */
  tap: (dir: 'to-peer' | 'to-client', payload: Uint8Array) => void;
  /** The relay's live-allocations gauge, read from its metrics endpoint (needs `{ metrics: true }`). */
  allocations(): Promise<number>;
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

export async function testRelay(portMin: number, portMax: number, onRelayed: TestRelay['tap'], opts: { metrics?: boolean } = {}): Promise<TestRelay> {
  const dir = mkdtempSync(join(tmpdir(), 'homelink-client-relay-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert,
  ], { stdio: 'ignore' });
  const ports = { udpPort: 0, tcpPort: 0, tlsPort: 0 };
  let relay: StartedRelay | null = null;
  const handle: TestRelay = {
    entry: { id: 'r1', region: 'test', lat: 0, lon: 0, host: '127.0.0.1', udpPort: 0, tcpPort: 0, tlsPort: 0, tlsHost: 'localhost' },
    ca: readFileSync(cert, 'utf8'),
    tap: onRelayed,
    async start() {
      relay = await startRelay(
        relayConfig({
          secrets: [TURN_SECRET],
          listenHost: '127.0.0.1',
          relayHost: '127.0.0.1',
          ...ports,
          tlsCert: cert,
          tlsKey: key,
          metricsPort: opts.metrics ? 0 : null,
          allowLoopback: true,
          relayPortMin: portMin,
          relayPortMax: portMax,
          shutdownDrainMs: 0,
          logLevel: 'silent',
        }),
        { onRelayed: (d, p) => handle.tap(d, p) },
      );
      ports.udpPort = relay.udp.port;
      ports.tcpPort = relay.tcp.port;
      ports.tlsPort = relay.tls!.port;
      handle.entry = { ...handle.entry, ...ports };
    },
    async allocations() {
      const url = relay?.metricsUrl;
      if (!url) throw new Error('test relay started without metrics');
      const text = await (await fetch(`${url}/metrics`)).text();
      const m = /^homelink_relay_allocations (\d+)$/m.exec(text);
      if (!m) throw new Error('no allocations gauge in the relay metrics');
      return Number(m[1]);
    },
    async stop() {
      await relay?.close();
      relay = null;
    },
    async close() {
      await handle.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await handle.start();
  return handle;
}
