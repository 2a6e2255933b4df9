/**
 * The product stack for the matrix: our relay (`relay/main.ts`) and the signaling worker
 * (workerd, signaling-server.ts) in `pub`, one client-library endpoint process
 * (peer-homelink.ts) per host namespace.
 *
 * The relay listens on 203.0.113.10: TURN over UDP and TCP on 3478, over TLS on 443 (the only
 * port the UDP-blocking firewall lets out), with the lab's ranges on its peer allow-list (not
 * its policy switched off). The signaling service listens on 203.0.113.5:443, so endpoints
 * behind that firewall reach it too, and hands out the relay's UDP, TCP and TLS URLs with
 * TURN REST credentials; the client chooses among them.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PUB, type Host, type Lab, type LabProcess } from './lab.js';
import { FIREWALL_TCP_PORT } from './nat.js';
import { CELL_DEADLINE_MS, peerResult, TRANSFER_BYTES, type CellSpec, type Stack } from './cells.js';
import type { LabTls } from './coturn.js';
import type { HomelinkPeerConfig } from './peer-homelink.js';
import type { LabSignalingConfig } from './signaling-server.js';
import { dumpOnFailure, tsxArgs, waitForLine } from './support.js';
import type { PeerResult } from './transfer.js';
import type { BackendName } from '../../client/index.js';

/** TURN's registered port (RFC 8656 section 3), for UDP and TCP. */
const TURN_PORT = 3478;
/** The lab's address ranges, and only those, are valid relay peers. */
const LAB_ALLOW = ['198.18.0.0/15', '198.51.100.0/24', '203.0.113.0/24'];
/** Bound on the relay and workerd start-up (tsx compile plus workerd boot on a busy machine). */
const START_TIMEOUT_MS = 60_000;
/** Bound on an endpoint connecting to presence. */
const READY_TIMEOUT_MS = 30_000;

export interface HomelinkStack extends Stack {
  readonly relay: LabProcess;
  readonly signaling: LabProcess;
  /** `http://203.0.113.5:443`, for endpoint processes of other scenarios. */
  readonly signalingUrl: string;
  /** The development issuer's folder: endpoint processes load it to mint tokens and certificates. */
  readonly issuerDir: string;
  /** The relay's live-allocations gauge (only with `metricsPort`). */
  allocations(): Promise<number>;
  /** One unlabelled series of the relay's metrics, `homelink_relay_<name>` (only with `metricsPort`). */
  metric(name: string): Promise<number>;
  stop(): Promise<void>;
}

export interface HomelinkStackOptions {
  /** Serve the relay's metrics on 127.0.0.1:<port> inside `pub` (read with `allocations()`). */
  readonly metricsPort?: number;
  /** The endpoints' WebRTC stack (default werift, the library's automatic choice). */
  readonly backend?: BackendName;
  /** Per cell run (read when each pair starts): node-datachannel's own options, see peer-homelink.ts. */
  nativeOptions?: HomelinkPeerConfig['nativeOptions'];
  /** Relay worker processes on the one advertised port (`--workers`; default 1). */
  readonly relayWorkers?: number;
}

async function waitForPort(lab: Lab, proto: 'u' | 't', port: number, proc: LabProcess, what: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const ss = await lab.exec(lab.pub, 'ss', [`-ln${proto}`, `sport = :${port}`]).catch(() => ({ stdout: '' }));
    if (ss.stdout.includes(`${PUB.relay}:${port}`)) return;
    if (proc.child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what} not listening on ${port}: ${proc.stderr().slice(-1500)} ${proc.stdout().slice(-1500)}`);
}

/** Starts relay and signaling in `pub`; resolves when both serve. */
export async function startHomelinkStack(lab: Lab, tls: LabTls, opts: HomelinkStackOptions = {}): Promise<HomelinkStack> {
  const issuerDir = mkdtempSync(join(tmpdir(), `natlab-${lab.runId}-issuer-`));
  const turnSecret = randomBytes(24).toString('hex');
  const relay = lab.spawn(lab.pub, process.execPath, tsxArgs(
    'relay/main.ts',
    '--secret', turnSecret,
    '--listen-host', PUB.relay, '--relay-host', PUB.relay,
    '--udp-port', String(TURN_PORT), '--tcp-port', String(TURN_PORT),
    '--tls-port', String(FIREWALL_TCP_PORT), '--tls-cert', tls.cert, '--tls-key', tls.key,
    ...LAB_ALLOW.flatMap((a) => ['--allow', a]),
    ...(opts.relayWorkers !== undefined ? ['--workers', String(opts.relayWorkers)] : []),
    '--metrics-port', opts.metricsPort !== undefined ? String(opts.metricsPort) : 'off', '--drain-ms', '0', '--log-level', process.env['NATLAB_DEBUG'] ? 'info' : 'warn',
  ));
  const sigCfg: LabSignalingConfig = {
    host: PUB.signaling,
    port: FIREWALL_TCP_PORT,
    issuerDir,
    turnSecret,
    relays: [
      { id: 'lab-relay', region: 'lab', lat: 0, lon: 0, host: PUB.relay, udpPort: TURN_PORT, tcpPort: TURN_PORT, tlsPort: FIREWALL_TCP_PORT },
    ],
  };
  const signaling = lab.spawn(lab.pub, process.execPath, tsxArgs('test/natlab/signaling-server.ts', JSON.stringify(sigCfg)));
  const stop = async (): Promise<void> => {
    await Promise.all([relay.stop(), signaling.stop()]);
    dumpOnFailure('infrastructure', { relay, signaling }, true);
    rmSync(issuerDir, { recursive: true, force: true });
  };
  try {
    await Promise.all([
      waitForPort(lab, 'u', TURN_PORT, relay, 'relay (UDP)'),
      waitForPort(lab, 't', FIREWALL_TCP_PORT, relay, 'relay (TLS)'),
      waitForLine(signaling, /^ready /, START_TIMEOUT_MS, 'signaling worker'),
    ]);
  } catch (e) {
    await stop();
    throw e;
  }
  const signalingUrl = `http://${PUB.signaling}:${FIREWALL_TCP_PORT}`;
  const metric = async (name: string): Promise<number> => {
    if (opts.metricsPort === undefined) throw new Error('stack started without relay metrics');
    const script = `fetch('http://127.0.0.1:${opts.metricsPort}/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))`;
    const { stdout } = await lab.exec(lab.pub, process.execPath, ['-e', script]);
    const m = new RegExp(`^homelink_relay_${name} (\\d+)$`, 'm').exec(stdout);
    if (!m) throw new Error(`no ${name} in the relay metrics`);
    return Number(m[1]);
  };

  return {
    name: `homelink: client library (${opts.backend ?? 'werift'} backend) + our relay (relay/main.ts) + signaling worker in workerd (Miniflare)`,
    relay,
    signaling,
    signalingUrl,
    issuerDir,
    allocations: () => metric('allocations'),
    metric,
    stop,
    async runPair(l: Lab, dialer: Host, answerer: Host, cell: CellSpec, marker: string): Promise<[PeerResult, PeerResult]> {
      const tag = randomBytes(3).toString('hex');
      const ids = { dialer: `d-${cell.id}-${tag}`, answerer: `a-${cell.id}-${tag}` };
      const base = { home: `home-${tag}`, signalingUrl, issuerDir, caFile: tls.cert, bytes: TRANSFER_BYTES, marker, deadlineMs: CELL_DEADLINE_MS };
      const cfgFor = (role: HomelinkPeerConfig['role'], host: Host): HomelinkPeerConfig => ({
        ...base,
        role,
        id: role === 'dialer' ? ids.dialer : ids.answerer,
        peer: role === 'dialer' ? ids.answerer : ids.dialer,
        hostAddress: host.address,
        ...(opts.backend ? { backend: opts.backend } : {}),
        ...(opts.nativeOptions ? { nativeOptions: opts.nativeOptions } : {}),
      });
      const a = l.spawn(answerer.ns, process.execPath, tsxArgs('test/natlab/peer-homelink.ts', JSON.stringify(cfgFor('answerer', answerer))));
      const d = l.spawn(dialer.ns, process.execPath, tsxArgs('test/natlab/peer-homelink.ts', JSON.stringify(cfgFor('dialer', dialer))));
      try {
        const results = Promise.all([peerResult(d, CELL_DEADLINE_MS + READY_TIMEOUT_MS), peerResult(a, CELL_DEADLINE_MS + READY_TIMEOUT_MS)]);
        const ready = await Promise.all([
          waitForLine(a, /^ready$/, READY_TIMEOUT_MS, 'answering endpoint'),
          waitForLine(d, /^ready$/, READY_TIMEOUT_MS, 'dialing endpoint'),
        ]).then(
          () => true,
          (e: unknown) => e,
        );
        if (ready !== true) {
          const failed: PeerResult = { ok: false, error: String(ready) };
          return [failed, failed];
        }
        d.child.stdin?.write('go\n');
        const r = await results;
        dumpOnFailure(cell.id, { dialer: d, answerer: a }, r.some((x) => !x.ok));
        return r;
      } finally {
        await Promise.all([d.stop(), a.stop()]);
      }
    },
  };
}
