/**
 * The relay's public surface: start a TURN/STUN relay in this process (or a
 * set of worker processes) from a {@link RelayConfig}.
 *
 * @example
 * const relay = await startRelay(relayConfig({ secrets: ['a-long-secret'], listenHost: '127.0.0.1', relayHost: '127.0.0.1',
 *   udpPort: 0, tcpPort: 0, metricsPort: null, allowLoopback: true }));
 * // turn:127.0.0.1:${relay.udp.port}
 * await relay.close();
 */
import { relayConfig, relayConfigFromArgs, configHelp, ConfigError, type RelayConfig } from './config.js';
import { NodeRelay, type BoundAddress, type RelayedHook } from './node/driver.js';
import { jsonLogger, type LogFn } from './node/log.js';
import { RelayMetrics, startMetricsServer, type MetricsServer } from './metrics.js';
import { startWorkers } from './node/workers.js';

export { relayConfig, relayConfigFromArgs, configHelp, ConfigError, type RelayConfig, type BoundAddress, type RelayedHook };

/** Optional hooks for tests and embedding. */
export interface RelayHooks {
  /** Sees every payload the relay forwards (test hook: prove only ciphertext crosses). */
  onRelayed?: RelayedHook;
  /** Receives log lines instead of stdout. */
  log?: LogFn;
}

/** A running relay. */
export interface StartedRelay {
  readonly udp: BoundAddress;
  readonly tcp: BoundAddress;
  readonly tls?: BoundAddress;
  /** `http://host:port` of the metrics/health server, when enabled. */
  readonly metricsUrl?: string;
  /** With `workers` > 1: the worker processes' pids, worker 0 first. */
  readonly pids?: readonly number[];
  /** With `workers` > 1: settles when a worker dies on its own (see relay/node/workers.ts). */
  readonly failure?: Promise<Error>;
  /** Graceful stop: no new allocations, bounded drain (config.shutdownDrainMs), then close. */
  close(): Promise<void>;
}

/**
 * Starts a relay: in this process, or with `config.workers` > 1 in that many worker
 * processes (see relay/node/workers.ts; the hooks then do not apply, since functions
 * cannot cross processes). `config.tcpPort` null is not supported here (the returned
 * shape always has TCP); TLS runs when `tlsCert`/`tlsKey` are set.
 */
export async function startRelay(config: RelayConfig, hooks: RelayHooks = {}): Promise<StartedRelay> {
  if (config.workers > 1) {
    if (hooks.onRelayed || hooks.log) throw new ConfigError('workers', 'workers: hooks need a single-process relay (workers: 1)');
    return startWorkers(config);
  }
  const log = hooks.log ?? jsonLogger(config.logLevel);
  const metrics = new RelayMetrics();
  const relay = new NodeRelay({
    metrics,
    config,
    relayPortMin: config.relayPortMin,
    relayPortMax: config.relayPortMax,
    udpPort: config.udpPort,
    tcpPort: config.tcpPort,
    tlsPort: config.tlsPort,
    reusePort: false,
    log,
    ...(hooks.onRelayed ? { onRelayed: hooks.onRelayed } : {}),
  });
  let bound;
  try {
    bound = await relay.listen();
  } catch (e) {
    await relay.close(0);
    throw e;
  }
  if (!bound.tcp) {
    await relay.close(0);
    throw new ConfigError('tcpPort', 'tcpPort: startRelay needs a TCP listener');
  }
  let metricsServer: MetricsServer | null = null;
  if (config.metricsPort !== null) {
    try {
      metricsServer = await startMetricsServer(metrics, { host: config.metricsHost, port: config.metricsPort, health: () => relay.health() });
    } catch (e) {
      await relay.close(0);
      throw e;
    }
  }
  const metricsHost = config.metricsHost.includes(':') ? `[${config.metricsHost}]` : config.metricsHost;
  let closing: Promise<void> | null = null;
  return {
    udp: bound.udp,
    tcp: bound.tcp,
    ...(bound.tls ? { tls: bound.tls } : {}),
    ...(metricsServer ? { metricsUrl: `http://${metricsHost}:${metricsServer.port}` } : {}),
    close: () =>
      (closing ??= (async () => {
        await relay.close();
        await metricsServer?.close();
      })()),
  };
}
