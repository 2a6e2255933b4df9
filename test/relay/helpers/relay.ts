/**
 * A real relay for the socket suites, and the self-signed certificate the
 * TLS suites give it. Every suite runs the relay the same way: on 127.0.0.1
 * with ephemeral UDP/TCP ports, loopback peers allowed (the echo peers sit on
 * loopback too), no shutdown drain and no log output. Each suite brings its
 * own secret and its own relay port range; the ranges are disjoint so the
 * suites can run in parallel.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { relayConfig, startRelay, type RelayConfig, type RelayHooks, type StartedRelay } from '../../../relay/index.js';

/** Options of {@link startLoopbackRelay}. */
export interface LoopbackRelayOptions {
  /** The TURN REST secret (one). */
  secret: string;
  /** The suite's own relay port range, inclusive. */
  relayPorts: readonly [min: number, max: number];
  /** More configuration (TLS, workers, metricsPort, advertisedAddresses), applied over the loopback defaults. */
  config?: Partial<Record<keyof RelayConfig, unknown>>;
  /** Hooks such as `onRelayed`, passed to `startRelay`. */
  hooks?: RelayHooks;
}

/**
 * Starts a relay on loopback (see the module comment); the caller closes it.
 *
 * @example
 * relay = await startLoopbackRelay({ secret: SECRET, relayPorts: [40000, 40999], config: { metricsPort: 0 } });
 */
export function startLoopbackRelay(opts: LoopbackRelayOptions): Promise<StartedRelay> {
  return startRelay(
    relayConfig({
      secrets: [opts.secret],
      listenHost: '127.0.0.1',
      relayHost: '127.0.0.1',
      udpPort: 0,
      tcpPort: 0,
      metricsPort: null,
      allowLoopback: true,
      relayPortMin: opts.relayPorts[0],
      relayPortMax: opts.relayPorts[1],
      shutdownDrainMs: 0,
      logLevel: 'silent',
      ...opts.config,
    }),
    opts.hooks,
  );
}

/** A self-signed certificate for 127.0.0.1 in a temporary folder. */
export interface TestCertificate {
  readonly certPath: string;
  readonly keyPath: string;
  /** The certificate (PEM), to trust it as a CA. */
  readonly ca: Buffer;
  /** Removes the folder. */
  dispose(): void;
}

/**
 * Makes a P-256 self-signed certificate for `IP:127.0.0.1`, valid one day, with the openssl CLI.
 *
 * @example
 * const cert = selfSignedCertificate('relay-tls-');
 * relayConfig({ tlsPort: 0, tlsCert: cert.certPath, tlsKey: cert.keyPath });
 */
export function selfSignedCertificate(prefix: string): TestCertificate {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1',
      '-keyout', keyPath, '-out', certPath,
    ], { stdio: 'ignore' });
    return { certPath, keyPath, ca: readFileSync(certPath), dispose: () => rmSync(dir, { recursive: true, force: true }) };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
