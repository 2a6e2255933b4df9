/**
 * The real signaling worker (workerd through Miniflare, test/support/signaling.ts) bound to the
 * lab's public signaling address. Runs inside `pub`:
 *
 *   node --import tsx test/natlab/signaling-server.ts '<json config>'
 *
 * The development issuer's key is persisted in `issuerDir`, so endpoint processes in other
 * namespaces load the same issuer to mint their own tokens and identity certificates.
 * Prints `ready <url>` once serving; SIGTERM/SIGINT dispose workerd.
 */
import { createDevIssuer } from '../../dev/issuer.js';
import type { RelayEntry } from '../../worker/config.js';
import { startSignaling } from '../support/signaling.js';

export interface LabSignalingConfig {
  readonly host: string;
  readonly port: number;
  readonly issuerDir: string;
  readonly turnSecret: string;
  readonly relays: RelayEntry[];
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as LabSignalingConfig;
const issuer = await createDevIssuer({ dir: cfg.issuerDir });
const sig = await startSignaling({ host: cfg.host, port: cfg.port, issuer, turnSecret: cfg.turnSecret, relays: cfg.relays });
process.stdout.write(`ready ${sig.url}\n`);
const stop = (): void => void sig.close().finally(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
