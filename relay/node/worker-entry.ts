/**
 * A relay worker process (see workers.ts): receives its configuration and the
 * shared TCP/TLS listening handles over IPC, runs one {@link NodeRelay}, and
 * exits after a graceful close when the primary asks (or when the primary dies).
 */
import type net from 'node:net';
import { RelayMetrics } from '../metrics.js';
import { NodeRelay } from './driver.js';
import { jsonLogger } from './log.js';
import type { WorkerMessage } from './workers.js';

let relay: NodeRelay | null = null;
let start: Extract<WorkerMessage, { type: 'start' }> | null = null;
let tcpHandle: net.Server | null = null;
let tlsHandle: net.Server | null = null;
const metrics = new RelayMetrics();
/** How often a worker sends its counters to the primary, which serves their sum. */
const METRICS_PUSH_MS = 1_000;

function send(m: WorkerMessage): void {
  process.send?.(m);
}

async function maybeStart(): Promise<void> {
  if (relay || !start || !tcpHandle || (start.sharedTls && !tlsHandle)) return;
  const s = start;
  const c = s.config;
  const log = jsonLogger(c.logLevel);
  const tcp = tcpHandle;
  relay = new NodeRelay({
    config: c,
    relayPortMin: s.relayPortMin,
    relayPortMax: s.relayPortMax,
    udpPort: s.udpPort,
    log: (level, event, fields) => log(level, event, { worker: s.index, ...fields }),
    sharedTcp: tcp,
    metrics,
    ...(tlsHandle ? { sharedTls: tlsHandle } : {}),
  });
  try {
    const bound = await relay.listen();
    send({ type: 'started', udp: bound.udp });
    setInterval(() => send({ type: 'metrics', snapshot: metrics.snapshot() }), METRICS_PUSH_MS).unref();
  } catch (e) {
    send({ type: 'failed', message: e instanceof Error ? e.message : String(e) });
    process.exit(1);
  }
}

process.on('message', (m: WorkerMessage | { type: 'tcp' } | { type: 'tls' }, handle?: unknown) => {
  if (m.type === 'start') start = m;
  else if (m.type === 'tcp') tcpHandle = handle as net.Server;
  else if (m.type === 'tls') tlsHandle = handle as net.Server;
  else if (m.type === 'close') {
    void (async () => {
      await relay?.close();
      tcpHandle?.close();
      tlsHandle?.close();
      send({ type: 'closed' });
      process.exit(0);
    })();
    return;
  }
  void maybeStart();
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
