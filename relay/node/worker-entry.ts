/**
 * A relay worker process (see workers.ts): receives its configuration and the
 * shared TCP/TLS listening handles over IPC, runs one {@link NodeRelay}, and
 * exits after a graceful close when the primary asks (or when the primary dies).
 */
import { readFileSync } from 'node:fs';
import type net from 'node:net';
import tls from 'node:tls';
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
  let sharedTls: net.Server | undefined;
  if (tlsHandle && c.tlsCert && c.tlsKey) {
    // Terminate TLS here: raw connections from the shared handle are fed to a local TLS server.
    const tlsServer = tls.createServer({ cert: readFileSync(c.tlsCert), key: readFileSync(c.tlsKey) });
    tlsServer.on('tlsClientError', () => {});
    tlsHandle.maxConnections = c.maxAllocations * 2; // as in the driver
    tlsHandle.on('connection', (raw: net.Socket) => {
      tlsServer.emit('connection', raw);
      raw.resume();
    });
    sharedTls = tlsServer;
  }
  const tcp = tcpHandle;
  relay = new NodeRelay({
    config: c,
    relayPortMin: s.relayPortMin,
    relayPortMax: s.relayPortMax,
    udpPort: s.udpPort,
    log: (level, event, fields) => log(level, event, { worker: s.index, ...fields }),
    sharedTcp: tcp,
    metrics,
    ...(sharedTls ? { sharedTls } : {}),
  });
  // Sockets arrive paused (pauseOnConnect in the primary): resume once the relay listens to them.
  tcp.on('connection', (sock: net.Socket) => sock.resume());
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
