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
import { parseCandidate, type BackendFactory, type CandidateInit } from '../../client/webrtc/backend.js';

export const TURN_SECRET = 'client-suite-turn-secret-0123456789abcdef';

export interface TestRelay {
  entry: RelayEntry;
  /** PEM of the relay's TLS certificate, to trust for `turns:`. */
  ca: string;
  /** Every payload forwarded, as seen by the relay (cleared by the test when it wants). */
  tap: (dir: 'to-peer' | 'to-client', payload: Uint8Array) => void;
  /** The relay's live-allocations gauge, read from its metrics endpoint (needs `{ metrics: true }`). */
  allocations(): Promise<number>;
  /** The relay's count of allocations created so far (`allocations_created_total`; needs `{ metrics: true }`). */
  allocationsCreated(): Promise<number>;
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
  const metric = async (family: string): Promise<number> => {
    const url = relay?.metricsUrl;
    if (!url) throw new Error('test relay started without metrics');
    const text = await (await fetch(`${url}/metrics`)).text();
    const m = new RegExp(`^homelink_relay_${family} (\\d+)$`, 'm').exec(text);
    if (!m) throw new Error(`no ${family} series in the relay metrics`);
    return Number(m[1]);
  };
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
    allocations: () => metric('allocations'),
    allocationsCreated: () => metric('allocations_created_total'),
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

/**
 * A relayed-only path on loopback, for a backend that cannot be told to relay (node-datachannel):
 * give the two peers their own loopback addresses (`RELAYED_ONLY_HOSTS`, apart from the relay's
 * 127.0.0.1) and wrap both factories with this. It drops every candidate but the relayed ones from
 * what the peer announces, trickled or in its descriptions, so neither side ever learns a host or
 * server-reflexive address of the other. A check sent from a host socket to the peer's relayed
 * address then reaches the relay from 127.0.0.2 or .3, for which that allocation has no
 * permission (the peer only installed one for the relayed candidates' 127.0.0.1; RFC 8656 §9:
 * permissions are per IP address), and is dropped. Only the relay-to-relay pair can succeed, and
 * no peer-reflexive candidate appears (every check arrives from a relayed address).
 */
export function relayedOnly(factory: BackendFactory): BackendFactory {
  const relayed = (line: string): boolean => parseCandidate(line)?.type === 'relay';
  const strip = (sdp: string): string => sdp.split('\r\n').filter((l) => !l.startsWith('a=candidate:') || relayed(l)).join('\r\n');
  return async (opts) => {
    const b = await factory(opts);
    return new Proxy(b, {
      get(target, prop, recv) {
        const v = Reflect.get(target, prop, recv) as unknown;
        if (typeof v !== 'function') return v;
        if (prop === 'createOffer' || prop === 'acceptOffer') {
          return async (...a: unknown[]) => strip(await (v as (...x: unknown[]) => Promise<string>).apply(target, a));
        }
        return (v as (...x: unknown[]) => unknown).bind(target);
      },
      set(target, prop, value: unknown) {
        if (prop === 'onCandidate' && typeof value === 'function') {
          const fn = value as (c: CandidateInit | null) => void;
          return Reflect.set(target, prop, (c: CandidateInit | null) => (c === null || relayed(c.candidate) ? fn(c) : undefined));
        }
        return Reflect.set(target, prop, value);
      },
    });
  };
}

/**
 * node-datachannel options for a relay-to-relay path. That path exists only here on loopback (a
 * deployed relay refuses peers at its own address), and on it the DTLS client connects first, so
 * its ClientHello waits in the server's queue until the server's DTLS starts. libdatachannel
 * 0.24.5 can deadlock exactly then over a relayed pair (the juice poll thread starts DTLS holding
 * the agent lock while a worker replays the ClientHello and sends through the relay, which needs
 * that lock; upstream PR #1630): seen as a CI run that hung in this suite. Holding the offerer's
 * relayed candidates makes the server connect first, so nothing waits in its queue.
 */
export const RELAY_TO_RELAY_NATIVE = { orderReflexiveChecks: true } as const;

/** The peers' own loopback addresses for `relayedOnly` (the relay listens on 127.0.0.1). */
export const RELAYED_ONLY_HOSTS = { offerer: '127.0.0.2', answerer: '127.0.0.3' } as const;
