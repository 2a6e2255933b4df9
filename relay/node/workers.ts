/**
 * Multi-process mode (`workers: N`): allocations are independent, so one
 * process per core with its own sockets scales throughput with cores.
 *
 * - One advertised port per transport: every worker binds the UDP, TCP and TLS
 *   listeners itself with SO_REUSEPORT (Node >= 22.12: dgram `reusePort`,
 *   `net.Server.listen({ reusePort })`). The kernel picks the socket by a hash
 *   of the 4-tuple, so a UDP client's 5-tuple always lands on the same worker,
 *   the one holding its allocation, and a TCP/TLS connection lives in the
 *   worker that accepted it. TLS is terminated in the worker. Worker 0 binds
 *   first (port 0 picks free ports) and the others join its ports. The hash
 *   maps onto however many sockets the group holds, so workers drop client
 *   datagrams until all are bound (`serve`): an allocation made earlier would
 *   hash to another worker afterwards.
 * - Nonces and credentials are stateless HMACs, so any worker can answer any
 *   client's first request.
 * - Relay ports: the configured range is split into N disjoint slices, one per
 *   worker, so relayed addresses stay unique across workers.
 * - The kernel joins any socket of the same user that sets SO_REUSEPORT on the
 *   port to the group, so the primary first checks that the configured ports
 *   are free (an exclusive bind): a second relay started by mistake fails
 *   instead of silently taking a share of the clients.
 * - The worker entry is the sibling file of this module (`worker-entry.ts`
 *   under tsx in development and tests, `worker-entry.js` when run from built
 *   JavaScript), so production needs no TypeScript loader.
 */
import { fork, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import type { RelayConfig } from '../config.js';
import { RelayMetrics, startMetricsServer, type MetricsServer, type RelayMetricsSnapshot } from '../metrics.js';
import type { BoundAddress } from './driver.js';

/** Messages between the primary and a worker. */
export type WorkerMessage =
  | { type: 'start'; index: number; config: RelayConfig; udpPort: number; tcpPort: number | null; tlsPort: number; relayPortMin: number; relayPortMax: number }
  | { type: 'started'; udp: BoundAddress; tcp: BoundAddress | null; tls: BoundAddress | null }
  | { type: 'failed'; message: string }
  | { type: 'metrics'; snapshot: RelayMetricsSnapshot }
  /** Every worker is bound: start answering UDP (see NodeRelayOptions.holdUdp). */
  | { type: 'serve' }
  | { type: 'close' }
  | { type: 'closed' };

/** A running set of worker processes. */
export interface StartedWorkers {
  /** The one UDP port every worker serves. */
  readonly udp: BoundAddress;
  readonly tcp: BoundAddress;
  readonly tls?: BoundAddress;
  readonly pids: readonly number[];
  /** `http://host:port` of the primary's metrics server (counters summed over workers), when enabled. */
  readonly metricsUrl?: string;
  /**
   * Settles with the error when a worker dies on its own. Workers are not respawned in place:
   * the CLI then closes the others and exits non-zero, so the supervisor (systemd, the
   * container runtime) restarts the relay whole, with every port as configured.
   */
  readonly failure: Promise<Error>;
  close(): Promise<void>;
}

/** How long a worker may take to start before the start fails. */
const WORKER_START_TIMEOUT_MS = 20_000;
/** Extra time past the drain a worker gets to exit before it is killed. */
const WORKER_EXIT_GRACE_MS = 5_000;

/**
 * V8 flags for worker processes. Under a burst of allocations V8 grows its young generation to
 * 16 MiB semi-spaces and keeps them: measured here, RSS per idle allocation at 10,000 allocations
 * was ~5.2 KB with the default and ~2.3 KB with 1 MiB semi-spaces, with GC under 2% of relay CPU
 * either way (the relay allocates little per packet). Operators of a single-process relay can set
 * the same through NODE_OPTIONS.
 */
export const WORKER_EXEC_ARGV: readonly string[] = ['--max-semi-space-size=1'];

/** The relay port slice of worker `i` of `n`. */
export function portSlice(min: number, max: number, i: number, n: number): { min: number; max: number } {
  const size = Math.floor((max - min + 1) / n);
  const lo = min + i * size;
  return { min: lo, max: i === n - 1 ? max : lo + size - 1 };
}

/**
 * The worker entry: this module's sibling, with the same extension. From TypeScript sources
 * (tests, `npm start`) it runs under the tsx loader the parent also runs under; from built
 * JavaScript (production: `node dist/js/relay/main.js`) it runs with plain node.
 */
export function workerEntry(moduleUrl: string = import.meta.url): { path: string; execArgv: string[] } {
  const ts = new URL(moduleUrl).pathname.endsWith('.ts');
  const path = fileURLToPath(new URL(ts ? './worker-entry.ts' : './worker-entry.js', moduleUrl));
  return { path, execArgv: [...(ts ? ['--import', 'tsx'] : []), ...WORKER_EXEC_ARGV] };
}

/** Fails when something already holds `port` (checked with an exclusive bind, then released). */
async function assertFree(kind: 'udp' | 'tcp', host: string, port: number, field: string): Promise<void> {
  if (port === 0) return;
  const err = await new Promise<Error | null>((resolve) => {
    if (kind === 'udp') {
      const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
      s.once('error', (e) => {
        s.close();
        resolve(e);
      });
      s.bind(port, host, () => s.close(() => resolve(null)));
    } else {
      const srv = net.createServer();
      srv.once('error', resolve);
      srv.listen({ port, host, exclusive: true }, () => srv.close(() => resolve(null)));
    }
  });
  if (err) throw new Error(`${field}: ${kind.toUpperCase()} port ${port} on ${host} is in use (${(err as NodeJS.ErrnoException).code ?? err.message})`, { cause: err });
}

/** Starts `config.workers` relay processes that share the listening ports (SO_REUSEPORT). */
export async function startWorkers(config: RelayConfig): Promise<StartedWorkers> {
  const n = config.workers;
  const tlsOn = config.tlsCert !== null && config.tlsKey !== null;
  await assertFree('udp', config.listenHost, config.udpPort, 'udpPort');
  if (config.tcpPort !== null) await assertFree('tcp', config.listenHost, config.tcpPort, 'tcpPort');
  if (tlsOn) await assertFree('tcp', config.listenHost, config.tlsPort, 'tlsPort');
  const entry = workerEntry();
  const children: ChildProcess[] = [];
  const snapshots: Array<RelayMetricsSnapshot | null> = [];
  let draining = false;
  let reportFailure: (e: Error) => void = () => {};
  const failure = new Promise<Error>((resolve) => (reportFailure = resolve));
  const kill = () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  };
  // Worker 0 binds the configured ports (0: free ones); the others join what it bound.
  let ports = { udpPort: config.udpPort, tcpPort: config.tcpPort, tlsPort: config.tlsPort };
  let first: Extract<WorkerMessage, { type: 'started' }> | null = null;
  try {
    for (let i = 0; i < n; i++) {
      const child = fork(entry.path, [], { execArgv: entry.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'json' });
      children.push(child);
      const slice = portSlice(config.relayPortMin, config.relayPortMax, i, n);
      const started = new Promise<Extract<WorkerMessage, { type: 'started' }>>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`worker ${i} did not start in time`)), WORKER_START_TIMEOUT_MS);
        child.on('message', (m: WorkerMessage) => {
          if (m.type === 'metrics') snapshots[i] = m.snapshot;
          else if (m.type === 'started') {
            clearTimeout(t);
            resolve(m);
          } else if (m.type === 'failed') {
            clearTimeout(t);
            reject(new Error(`worker ${i}: ${m.message}`));
          }
        });
        child.once('exit', (code) => {
          clearTimeout(t);
          reject(new Error(`worker ${i} exited with ${code}`));
        });
      });
      const start: WorkerMessage = { type: 'start', index: i, config, ...ports, relayPortMin: slice.min, relayPortMax: slice.max };
      child.send(start);
      const bound = await started;
      if (i === 0) {
        first = bound;
        ports = { udpPort: bound.udp.port, tcpPort: bound.tcp?.port ?? null, tlsPort: bound.tls?.port ?? config.tlsPort };
      }
      child.once('exit', (code, signal) => {
        if (!draining) reportFailure(new Error(`worker ${i} exited unexpectedly (${signal ?? code})`));
      });
    }
  } catch (e) {
    kill();
    throw e;
  }
  if (!first?.tcp) {
    kill();
    throw new Error('tcpPort: the workers need a TCP listener');
  }
  // The reuseport group is complete: the kernel's worker for each client is fixed from now on.
  for (const c of children) c.send({ type: 'serve' } satisfies WorkerMessage);
  let metricsServer: MetricsServer | null = null;
  if (config.metricsPort !== null) {
    const sum = {
      render: () => {
        const total = new RelayMetrics();
        for (const snap of snapshots) if (snap) total.add(snap);
        return total.render();
      },
    };
    try {
      metricsServer = await startMetricsServer(sum, {
        host: config.metricsHost,
        port: config.metricsPort,
        health: () => {
          const alive = children.filter((c) => c.exitCode === null && c.signalCode === null).length;
          return { ok: !draining && alive === n, draining, workers: n, alive };
        },
      });
    } catch (e) {
      kill();
      throw e;
    }
  }
  const metricsHost = config.metricsHost.includes(':') ? `[${config.metricsHost}]` : config.metricsHost;
  let closing: Promise<void> | null = null;
  return {
    ...(metricsServer ? { metricsUrl: `http://${metricsHost}:${metricsServer.port}` } : {}),
    udp: first.udp,
    tcp: first.tcp,
    ...(first.tls ? { tls: first.tls } : {}),
    pids: children.map((c) => c.pid!),
    failure,
    close: () => (closing ??= stopAll()),
  };

  async function stopAll(): Promise<void> {
    draining = true;
    const limit = config.shutdownDrainMs + WORKER_EXIT_GRACE_MS;
    await Promise.all(children.map((c) => stopChild(c, limit)));
    await metricsServer?.close();
  }
}

/** Asks a worker to close gracefully; kills it if it has not exited within `limitMs`. */
function stopChild(c: ChildProcess, limitMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) return resolve();
    const t = setTimeout(() => c.kill('SIGKILL'), limitMs);
    c.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    try {
      c.send({ type: 'close' } satisfies WorkerMessage);
    } catch {
      c.kill('SIGKILL');
    }
  });
}
