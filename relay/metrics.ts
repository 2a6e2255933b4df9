/**
 * Relay metrics: plain numeric counters that the hot path increments in place,
 * rendered in the Prometheus text exposition format (version 0.0.4), and a
 * small node:http server for `/metrics` and `/health`, bound to 127.0.0.1 by
 * default so that only the host (or a scraper the operator points at it)
 * can read it.
 *
 * Design: every counter is a field of one object with a fixed shape, so an
 * increment is a property store (no Map lookup, no label hashing, no
 * allocation). Labels are only ever taken from small fixed sets (direction,
 * drop reason, auth failure reason, deny reason, quota kind): nothing keyed
 * by user, allocation or address ever becomes a series, which is what made
 * coturn's Prometheus exporter grow without bound.
 *
 * The counters themselves are defined once, in relay/turn/counters.ts; a
 * {@link RelayMetrics} is the core's counter object with rendering added, and
 * a primary {@link RelayMetrics.add}s snapshots from its worker processes
 * into one before rendering.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DENY_REASONS } from './policy.js';
import { addCounters, COUNTERS, createTurnCounters, PEERS_DENIED_FAMILY, snapshotCounters, type TurnCounters } from './turn/counters.js';

/** Prefix of every series, so a shared Prometheus can tell our relay from others. */
const PREFIX = 'homelink_relay_';

/** Default bind address: loopback, since metrics reveal load and should not face the internet (issue 3). */
export const DEFAULT_METRICS_HOST = '127.0.0.1';

/** A scrape is one small GET; anything slower than this is a stuck or hostile client. */
const REQUEST_TIMEOUT_MS = 5_000;
/** Headers of a scrape fit in a few hundred bytes; refuse more to bound memory per connection. */
const MAX_HEADER_BYTES = 8 * 1024;
/** Prometheus scrapes every 10-60 s; close idle keep-alive connections well before that adds up. */
const KEEP_ALIVE_TIMEOUT_MS = 5_000;

/**
 * The counters of one relay process ({@link TurnCounters}: the fields come from the one
 * table in relay/turn/counters.ts), with rendering and worker aggregation.
 */
export interface RelayMetrics extends TurnCounters {}
export class RelayMetrics {
  constructor() {
    Object.assign(this, createTurnCounters());
  }

  /**
   * Adds every counter of `other` (e.g. a snapshot sent by a worker process) into this one.
   * Unknown deny reasons in `other` are ignored; non-finite values count as 0.
   */
  add(other: Partial<RelayMetricsSnapshot>): this {
    addCounters(this, other);
    return this;
  }

  /** A plain-object copy (structured-clone and JSON safe), e.g. to send to a primary process. */
  snapshot(): RelayMetricsSnapshot {
    this.beforeRead?.();
    return snapshotCounters(this);
  }

  /**
   * Called before every read (snapshot, render): a driver that counts outside this object (the
   * native data path) folds its counts in here, so a scrape is never behind.
   */
  beforeRead?: () => void;

  /**
   * Renders the Prometheus text exposition format (HELP and TYPE per family).
   *
   * @example
   * const m = new RelayMetrics();
   * m.packetsToPeer++;
   * m.render(); // "...homelink_relay_packets_total{direction=\"to_peer\"} 1\n..."
   */
  render(): string {
    this.beforeRead?.();
    return renderMetrics(this);
  }
}

/** A plain copy of {@link RelayMetrics} without methods. */
export type RelayMetricsSnapshot = TurnCounters;

/** Formats a sample value: integers exactly, anything non-finite as Prometheus spells it. */
function value(v: number): string {
  if (Number.isFinite(v)) return String(v);
  if (Number.isNaN(v)) return 'NaN';
  return v > 0 ? '+Inf' : '-Inf';
}

/** Renders any object with {@link RelayMetrics}' fields (see {@link RelayMetrics.render}), family by family from the counter table. */
export function renderMetrics(m: RelayMetricsSnapshot): string {
  const lines: string[] = [];
  let family: string | null = null;
  for (const d of COUNTERS) {
    if (d.family === null) continue;
    const name = PREFIX + d.family;
    if (d.family !== family) {
      family = d.family;
      lines.push(`# HELP ${name} ${d.help}`, `# TYPE ${name} ${d.type}`);
    }
    lines.push(`${name}${d.labels ? `{${d.labels}}` : ''} ${value(m[d.field])}`);
  }
  const denied = PREFIX + PEERS_DENIED_FAMILY.family;
  lines.push(`# HELP ${denied} ${PEERS_DENIED_FAMILY.help}`, `# TYPE ${denied} counter`);
  for (const r of DENY_REASONS) lines.push(`${denied}{reason="${r}"} ${value(m.peersDeniedByReason[r] ?? 0)}`);
  return lines.join('\n') + '\n';
}

/** Process-level families (resident memory, CPU) appended by the server; names follow Prometheus client conventions. */
function renderProcess(): string {
  const mem = process.memoryUsage();
  const cpu = process.cpuUsage();
  return [
    '# HELP process_resident_memory_bytes Resident memory size in bytes.',
    '# TYPE process_resident_memory_bytes gauge',
    `process_resident_memory_bytes ${mem.rss}`,
    '# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.',
    '# TYPE process_cpu_seconds_total counter',
    `process_cpu_seconds_total ${(cpu.user + cpu.system) / 1e6}`,
    '',
  ].join('\n');
}

/** The health report; `ok: false` answers 503 so a load balancer takes the relay out. */
export interface HealthReport {
  ok: boolean;
  [detail: string]: unknown;
}

/** Options of {@link startMetricsServer}. */
export interface MetricsServerOptions {
  /** Bind address; default {@link DEFAULT_METRICS_HOST}. */
  host?: string;
  /** Port; 0 picks a free one (read it from the result). */
  port: number;
  /** Called per `/health` request. */
  health: () => HealthReport;
  /** Append `process_*` families for this process (default true). */
  processMetrics?: boolean;
}

/** A running metrics server. */
export interface MetricsServer {
  /** The bound port. */
  readonly port: number;
  /** Stops listening and closes open connections. */
  close(): Promise<void>;
}

/** Failure to start the metrics server (e.g. the port is taken); names the address, never anything secret. */
export class MetricsServerError extends Error {
  override readonly name = 'MetricsServerError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/**
 * Serves `GET /metrics` (Prometheus text) and `GET /health` (JSON, 200 or
 * 503) over node:http. Anything else is 404 or 405. A throwing `render` or
 * `health` becomes a 500/503 without details; it never crashes the relay.
 *
 * @example
 * const metrics = new RelayMetrics();
 * const srv = await startMetricsServer(metrics, { port: 9641, health: () => ({ ok: true }) });
 * // curl http://127.0.0.1:9641/metrics
 * await srv.close();
 */
export function startMetricsServer(metrics: { render(): string }, opts: MetricsServerOptions): Promise<MetricsServer> {
  const host = opts.host ?? DEFAULT_METRICS_HOST;
  const withProcess = opts.processMetrics !== false;
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path !== '/metrics' && path !== '/health') return reply(res, 404, 'text/plain; charset=utf-8', 'not found\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return reply(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n', req.method === 'HEAD');
    }
    const head = req.method === 'HEAD';
    if (path === '/metrics') {
      let body: string;
      try {
        body = metrics.render() + (withProcess ? renderProcess() : '');
      } catch {
        return reply(res, 500, 'text/plain; charset=utf-8', 'metrics unavailable\n', head);
      }
      return reply(res, 200, 'text/plain; version=0.0.4; charset=utf-8', body, head);
    }
    let report: HealthReport;
    let body: string;
    try {
      report = opts.health();
      body = JSON.stringify(report) + '\n';
    } catch {
      return reply(res, 503, 'application/json', '{"ok":false}\n', head);
    }
    return reply(res, report.ok === true ? 200 : 503, 'application/json', body, head);
  };

  const server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: REQUEST_TIMEOUT_MS }, handle);
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.headersTimeout = REQUEST_TIMEOUT_MS;
  server.on('clientError', (err: Error & { code?: string }, socket) => {
    const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
    if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\n\r\n`);
    else socket.destroy();
  });

  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      reject(new MetricsServerError(`metrics server cannot listen on ${host}:${opts.port}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen(opts.port, host, () => {
      server.off('error', onError);
      // After start-up, a socket error must not take the relay down.
      server.on('error', () => {});
      const port = (server.address() as AddressInfo).port;
      resolve({
        port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

function reply(res: ServerResponse, status: number, type: string, body: string, head = false): void {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(head ? undefined : body);
}
