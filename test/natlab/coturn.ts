/**
 * Reference infrastructure for the matrix harness: Debian's coturn in `pub`, with TURN
 * REST-API credentials from our shared protocol code, UDP/TCP on 3478 and TLS on 443.
 * It proves the lab and the harness independently of our own relay.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mintTurnCredential } from '../../protocol/index.js';
import { PUB, type Lab, type LabProcess } from './lab.js';
import { FIREWALL_TCP_PORT } from './nat.js';

/** TURN's registered port (RFC 8656 section 3). */
export const TURN_PORT = 3478;
/** Credential lifetime for a lab run: longer than the whole matrix. */
const CREDENTIAL_TTL_S = 3_600;

export interface LabTls {
  readonly dir: string;
  readonly cert: string;
  readonly key: string;
  dispose(): void;
}

/** A throwaway self-signed certificate for the relay's lab address (IP SAN), valid one day. */
export function makeLabTls(runId: string): LabTls {
  const dir = mkdtempSync(join(tmpdir(), `natlab-${runId}-tls-`));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync(
    'openssl',
    [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=relay.homelink.lab',
      '-addext', `subjectAltName=IP:${PUB.relay},IP:${PUB.relayAlt}`,
      '-keyout', key, '-out', cert,
    ],
    { stdio: 'ignore', timeout: 10_000 },
  );
  return { dir, cert, key, dispose: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface CoturnHandle {
  readonly proc: LabProcess;
  readonly secret: string;
  /** ICE servers for an endpoint: STUN + one TURN URL (werift uses only the first of each). */
  iceServers(endpointId: string, udpBlocked: boolean): Promise<{ urls: string; username?: string; credential?: string }[]>;
}

/** Starts coturn in `pub`; resolves when its listeners are up (bounded). */
export async function startCoturn(lab: Lab, tls: LabTls, secret: string): Promise<CoturnHandle> {
  const proc = lab.spawn(lab.pub, 'turnserver', [
    '-n', '--no-cli', '--log-file=stdout', '--simple-log',
    `--listening-ip=${PUB.relay}`, `--relay-ip=${PUB.relay}`,
    `--listening-port=${TURN_PORT}`, `--tls-listening-port=${FIREWALL_TCP_PORT}`,
    `--cert=${tls.cert}`, `--pkey=${tls.key}`,
    '--use-auth-secret', `--static-auth-secret=${secret}`, '--realm=homelink.lab',
    '--allowed-peer-ip=198.18.0.0-198.19.255.255', '--allowed-peer-ip=203.0.113.0-203.0.113.255',
    // Own pid file and user database: never the system-wide ones another coturn may use.
    `--pidfile=${tls.dir}/turnserver.pid`, `--userdb=${tls.dir}/turndb`,
    '--no-multicast-peers', '--min-port=40000', '--max-port=60000', '--no-dtls',
  ]);
  const deadline = Date.now() + 10_000;
  // coturn logs nothing reliable on readiness; poll for its TLS listener (bounded).
  while (Date.now() < deadline) {
    const ss = await lab.exec(lab.pub, 'ss', ['-ltn', `sport = :${FIREWALL_TCP_PORT}`]).catch(() => ({ stdout: '' }));
    if (ss.stdout.includes(`${PUB.relay}:${FIREWALL_TCP_PORT}`)) break;
    if (proc.child.exitCode !== null) throw new Error(`coturn exited: ${proc.stdout().slice(-1000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    proc,
    secret,
    async iceServers(endpointId, udpBlocked) {
      const c = await mintTurnCredential(secret, endpointId, CREDENTIAL_TTL_S, Date.now() / 1000);
      const turn = udpBlocked
        ? `turns:${PUB.relay}:${FIREWALL_TCP_PORT}?transport=tcp`
        : `turn:${PUB.relay}:${TURN_PORT}?transport=udp`;
      return [
        { urls: `stun:${PUB.relay}:${TURN_PORT}` },
        { urls: turn, username: c.username, credential: c.credential },
      ];
    },
  };
}
