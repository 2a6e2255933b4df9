/**
 * Multi-process mode (`workers: N`): allocations are independent, so one
 * process per core with its own sockets scales throughput with cores.
 *
 * - UDP: Node 20 has no SO_REUSEPORT for dgram, and a shared UDP socket would
 *   spread one client's 5-tuple over processes (its allocation lives in one).
 *   So worker i listens on its own UDP port (udpPort + i; any free port when
 *   udpPort is 0). Operators list each worker's port as a TURN URL, or put them
 *   behind DNS SRV / the signaling service's relay list.
 * - TCP/TLS: the primary listens once and hands the listening handle to every
 *   worker (child_process `send(msg, server)`); the kernel spreads accepted
 *   connections, and a connection's allocation stays in the process that took it.
 *   TLS is terminated in the worker.
 * - Relay ports: the configured range is split into N disjoint slices.
 */
import { fork, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import type { RelayConfig } from '../config.js';
import { RelayMetrics, startMetricsServer, type MetricsServer, type RelayMetricsSnapshot } from '../metrics.js';
import type { BoundAddress } from './driver.js';

/** Messages between the primary and a worker. */
export type WorkerMessage =
  | { type: 'start'; index: number; config: RelayConfig; udpPort: number; relayPortMin: number; relayPortMax: number; sharedTls: boolean }
  | { type: 'started'; udp: BoundAddress }
  | { type: 'failed'; message: string }
  | { type: 'metrics'; snapshot: RelayMetricsSnapshot }
  | { type: 'close' }
  | { type: 'closed' };

/** A running set of worker processes. */
export interface StartedWorkers {
  readonly udp: BoundAddress;
  /** Every worker's UDP listener, worker 0 first. */
  readonly udpAll: readonly BoundAddress[];
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

function listen(srv: net.Server, port: number, host: string): Promise<BoundAddress> {
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen({ port, host, exclusive: false }, () => {
      srv.off('error', reject);
      const a = srv.address() as net.AddressInfo;
      resolve({ host: a.address, port: a.port });
    });
  });
}

/** Starts `config.workers` relay processes sharing TCP/TLS listeners. */
export async function startWorkers(config: RelayConfig): Promise<StartedWorkers> {
  const n = config.workers;
  const tcpSrv = net.createServer({ pauseOnConnect: true });
  const tcp = await listen(tcpSrv, config.tcpPort ?? 0, config.listenHost);
  let tlsSrv: net.Server | null = null;
  let tls: BoundAddress | undefined;
  if (config.tlsCert && config.tlsKey) {
    tlsSrv = net.createServer({ pauseOnConnect: true });
    tls = await listen(tlsSrv, config.tlsPort, config.listenHost);
  }
  const entry = fileURLToPath(new URL('./worker-entry.ts', import.meta.url));
  const children: ChildProcess[] = [];
  const udpAll: BoundAddress[] = [];
  const snapshots: Array<RelayMetricsSnapshot | null> = [];
  let draining = false;
  let reportFailure: (e: Error) => void = () => {};
  const failure = new Promise<Error>((resolve) => (reportFailure = resolve));
  const kill = () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  };
  try {
    for (let i = 0; i < n; i++) {
      const child = fork(entry, [], { execArgv: ['--import', 'tsx', ...WORKER_EXEC_ARGV], stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'json' });
      children.push(child);
      const slice = portSlice(config.relayPortMin, config.relayPortMax, i, n);
      const started = new Promise<BoundAddress>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`worker ${i} did not start in time`)), WORKER_START_TIMEOUT_MS);
        child.on('message', (m: WorkerMessage) => {
          if (m.type === 'metrics') snapshots[i] = m.snapshot;
          else if (m.type === 'started') {
            clearTimeout(t);
            resolve(m.udp);
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
      const start: WorkerMessage = {
        type: 'start',
        index: i,
        config,
        udpPort: config.udpPort === 0 ? 0 : config.udpPort + i,
        relayPortMin: slice.min,
        relayPortMax: slice.max,
        sharedTls: tlsSrv !== null,
      };
      child.send(start);
      child.send({ type: 'tcp' }, tcpSrv);
      if (tlsSrv) child.send({ type: 'tls' }, tlsSrv);
      udpAll.push(await started);
      child.once('exit', (code, signal) => {
        if (!draining) reportFailure(new Error(`worker ${i} exited unexpectedly (${signal ?? code})`));
      });
    }
  } catch (e) {
    kill();
    tcpSrv.close();
    tlsSrv?.close();
    throw e;
  }
  // The workers hold the listening handles now; the primary stops accepting.
  tcpSrv.close();
  tlsSrv?.close();
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
    udp: udpAll[0]!,
    udpAll,
    tcp,
    ...(tls ? { tls } : {}),
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
