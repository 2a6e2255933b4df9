/**
 * A child process for test/client/close.test.ts: an endpoint that dials, opens a relayed link,
 * then closes the endpoint when told to (a `close` line on stdin) and does nothing else. It never
 * calls `process.exit`: the test asserts the process ends by itself, i.e. that closing released
 * every socket, timer and TURN allocation the library held.
 *
 *   node --import tsx test/client/close-child.ts '<json config>'
 *
 * stdout: `open <path kind>` once the link is open, `closing`, then `closed <ms>` when
 * `ep.close()` resolved. stderr: the handles still active just after close (diagnostics).
 */
import { createInterface } from 'node:readline';
import { createDevIssuer } from '../../dev/issuer.js';
import { Endpoint, generateDeviceKey } from '../../client/index.js';

export interface CloseChildConfig {
  readonly signalingUrl: string;
  readonly issuerDir: string;
  readonly id: string;
  readonly peer: string;
  readonly home: string;
  readonly ca: string;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as CloseChildConfig;
const issuer = await createDevIssuer({ dir: cfg.issuerDir });
const key = await generateDeviceKey();
const ep = await Endpoint.connect({
  signalingUrl: cfg.signalingUrl,
  token: await issuer.accessToken({ sub: cfg.id, homes: [cfg.home] }),
  identity: { certificate: await issuer.identityCertificate({ sub: cfg.id, publicJwk: key.publicJwk }), privateKey: key.privateKey },
  trust: { issuer: issuer.issuer, jwks: issuer.publicJwks },
  hostAddresses: ['127.0.0.1'],
  iceTransportPolicy: 'relay',
  turnTlsOptions: { ca: cfg.ca },
});
const link = await ep.dial(cfg.peer, { timeoutMs: 30_000 });
const ch = await link.channel('hello');
await ch.send('hello');
process.stdout.write(`open ${link.path?.kind ?? 'unknown'}\n`);
const input = createInterface({ input: process.stdin });
input.on('line', (line) => {
  if (line.trim() !== 'close') return;
  input.close();
  process.stdin.destroy();
  process.stdout.write('closing\n');
  const t0 = performance.now();
  void ep.close().then(() => {
    process.stdout.write(`closed ${Math.round(performance.now() - t0)}\n`);
    process.stderr.write(`active after close: ${process.getActiveResourcesInfo().join(',')}\n`);
  });
});
