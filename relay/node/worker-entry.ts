/**
 * A relay worker process (see workers.ts): receives its configuration and its
 * ports over IPC, runs one {@link NodeRelay} whose listeners join the shared
 * ports with SO_REUSEPORT, pushes its counters to the primary every second,
 * and exits after a graceful close when the primary asks (or when the primary
 * dies).
 */
import { RelayMetrics } from '../metrics.js';
import { NodeRelay } from './driver.js';
import { jsonLogger } from './log.js';
import type { WorkerMessage } from './workers.js';

let relay: NodeRelay | null = null;
const metrics = new RelayMetrics();
/** How often a worker sends its counters to the primary, which serves their sum. */
const METRICS_PUSH_MS = 1_000;

function send(m: WorkerMessage): void {
  process.send?.(m);
}

async function start(s: Extract<WorkerMessage, { type: 'start' }>): Promise<void> {
  if (relay) return;
  const c = s.config;
  const log = jsonLogger(c.logLevel);
  relay = new NodeRelay({
    config: c,
    relayPortMin: s.relayPortMin,
    relayPortMax: s.relayPortMax,
    udpPort: s.udpPort,
    tcpPort: s.tcpPort,
    tlsPort: s.tlsPort,
    reusePort: true,
    holdUdp: true,
    log: (level, event, fields) => log(level, event, { worker: s.index, ...fields }),
    metrics,
  });
  try {
    const bound = await relay.listen();
    send({ type: 'started', udp: bound.udp, tcp: bound.tcp, tls: bound.tls });
    setInterval(() => send({ type: 'metrics', snapshot: metrics.snapshot() }), METRICS_PUSH_MS).unref();
  } catch (e) {
    send({ type: 'failed', message: e instanceof Error ? e.message : String(e) });
    process.exit(1);
  }
}

process.on('message', (m: WorkerMessage) => {
  if (m.type === 'start') void start(m);
  else if (m.type === 'serve') relay?.serve();
  else if (m.type === 'close') {
    void (async () => {
      await relay?.close();
      send({ type: 'closed' });
      process.exit(0);
    })();
  }
});

// The primary went away: stop rather than linger as an orphan.
process.on('disconnect', () => {
  void (async () => {
    await relay?.close(0);
    process.exit(0);
  })();
});
// Signals go to the primary, which tells workers to close.
process.on('SIGINT', () => {});
process.on('SIGTERM', () => {});
