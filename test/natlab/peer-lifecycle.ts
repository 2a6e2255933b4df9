/**
 * A long-lived endpoint process for the lifecycle scenarios (lifecycle.test.ts): it stays
 * connected, accepts every request, dials on command, and reports every event with a wall-clock
 * timestamp (all lab namespaces share the machine's clock), so the harness can time what happens
 * after it breaks the network or interrupts a process. Runs inside a host namespace:
 *
 *   node --import tsx test/natlab/peer-lifecycle.ts '<json config>'
 *
 * stdin commands: `dial <peer> <timeoutMs>`, `close-links`.
 * stdout lines: `E <unix ms> <event> [details]` with events `online`, `offline`, `request`,
 * `link-open <peer> <direct|relay>`, `link-close <reason>`, `dial-ok <direct|relay>`,
 * `dial-fail <code>`, `links-closed`; `ready` once connected.
 *
 * With `cli: true` the endpoint is connected by the CLI's own code (cli/endpoint.ts
 * `connectEndpoint`), so SIGINT runs exactly what `homelink listen`/`dial` do on Ctrl-C. The
 * process never calls `process.exit` itself.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { createDevIssuer } from '../../dev/issuer.js';
import { Endpoint, generateDeviceKey, type Link } from '../../client/index.js';
import type { KeepaliveOptions } from '../../client/keepalive.js';
import { connectEndpoint } from '../../cli/endpoint.js';

export interface LifecyclePeerConfig {
  readonly id: string;
  readonly home: string;
  readonly signalingUrl: string;
  readonly issuerDir: string;
  readonly caFile: string;
  /** This host's only address (library mode); the CLI gathers on the namespace's eth0 by itself. */
  readonly hostAddress: string;
  readonly keepalive?: KeepaliveOptions;
  /** Connect through cli/endpoint.ts (its SIGINT handling) instead of `Endpoint.connect`. */
  readonly cli?: boolean;
  readonly forceRelay?: boolean;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as LifecyclePeerConfig;
const event = (what: string): void => void process.stdout.write(`E ${Date.now()} ${what}\n`);

const issuer = await createDevIssuer({ dir: cfg.issuerDir });
const key = await generateDeviceKey();
const identity = { certificate: await issuer.identityCertificate({ sub: cfg.id, publicJwk: key.publicJwk }), privateKey: key.privateKey };
const trust = { issuer: issuer.issuer, jwks: issuer.publicJwks };
const ep = cfg.cli
  ? await connectEndpoint(
      { endpointId: cfg.id, signalingUrl: cfg.signalingUrl, token: await issuer.accessToken({ sub: cfg.id, homes: [cfg.home] }), identity, trust, stack: null },
      { relay: cfg.forceRelay === true },
    )
  : await Endpoint.connect({
      signalingUrl: cfg.signalingUrl,
      token: () => issuer.accessToken({ sub: cfg.id, homes: [cfg.home] }),
      identity,
      trust,
      hostAddresses: [cfg.hostAddress],
      turnTlsOptions: { ca: readFileSync(cfg.caFile, 'utf8') },
      ...(cfg.forceRelay ? { iceTransportPolicy: 'relay' as const } : {}),
      ...(cfg.keepalive ? { keepalive: cfg.keepalive } : {}),
    });

const links = new Set<Link>();
function watch(link: Link): void {
  links.add(link);
  event(`link-open ${link.peer} ${link.path?.kind ?? 'unknown'}`);
  link.once('close', (reason) => {
    links.delete(link);
    event(`link-close ${reason}`);
  });
}

ep.on('online', () => event('online'));
ep.on('offline', () => event('offline'));
ep.on('request', (req) => {
  event(`request ${req.peer}`);
  req.accept().then(watch, (e: unknown) => event(`accept-fail ${(e as { code?: string }).code ?? String(e)}`));
});

createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, a, b] = line.trim().split(/\s+/);
  if (cmd === 'dial' && a) {
    ep.dial(a, { timeoutMs: Number(b ?? 20_000) }).then(
      (link) => {
        event(`dial-ok ${link.path?.kind ?? 'unknown'}`);
        watch(link);
      },
      (e: unknown) => event(`dial-fail ${(e as { code?: string }).code ?? String(e)}`),
    );
  } else if (cmd === 'close-links') {
    void Promise.all([...links].map((l) => l.close('harness'))).then(() => event('links-closed'));
  }
});
process.stdout.write('ready\n');
