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
 * The field names match the TURN core's counters (relay/turn/counters.ts), so
 * a {@link RelayMetrics} can serve as the core's counters directly, or a
 * driver can {@link RelayMetrics.add} snapshots from several worker
 * processes into one before rendering.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DENY_REASONS, type DenyReason } from './policy.js';

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

/** The counters of one relay process. All fields are plain numbers, incremented directly. */
export class RelayMetrics {
  // Gauges: current state.
  /** Live allocations. */
  allocations = 0;
  /** Live permissions across all allocations. */
  permissions = 0;
  /** Live channel bindings across all allocations. */
  channels = 0;
  /** Open TCP/TLS client connections. */
  streamConnections = 0;

  // Totals since start.
  allocationsCreated = 0;
  allocationsExpired = 0;
  /** STUN/TURN requests handled (all methods). */
  requests = 0;
  packetsToPeer = 0;
  bytesToPeer = 0;
  packetsToClient = 0;
  bytesToClient = 0;

  // Packets dropped, by reason.
  dropMalformed = 0;
  dropNoAllocation = 0;
  dropNoPermission = 0;
  dropNoChannel = 0;
  dropBandwidth = 0;
  dropSendFailed = 0;
  dropBackpressure = 0;

  // Authentication: challenges (401 to a first, unauthenticated request) are normal; the rest are failures.
  authChallenges = 0;
  authMissingFields = 0;
  authStaleNonce = 0;
  authBadUsername = 0;
  authExpired = 0;
  authBadIntegrity = 0;
  authWrongCredentials = 0;

  // Peers refused by the policy (relay/policy.ts): the total and one counter per reason.
  peersDenied = 0;
  readonly peersDeniedByReason: Record<DenyReason, number> = zeroByReason();

  // Quota refusals, by kind.
  quotaAllocationsPerUser = 0;
  quotaAllocationsTotal = 0;
  quotaPermissions = 0;
  quotaRelayPorts = 0;
  quotaStreamBuffer = 0;

  /**
   * Adds every counter of `other` (e.g. a snapshot sent by a worker process) into this one.
   * Unknown deny reasons in `other` are ignored; non-finite values count as 0.
   */
  add(other: Partial<RelayMetricsSnapshot>): this {
    for (const k of NUMERIC_FIELDS) {
      const v = other[k];
      if (typeof v === 'number' && Number.isFinite(v)) this[k] += v;
    }
    const by = other.peersDeniedByReason;
    if (by && typeof by === 'object') {
      for (const r of DENY_REASONS) {
        const v = (by as Record<string, unknown>)[r];
        if (typeof v === 'number' && Number.isFinite(v)) this.peersDeniedByReason[r] += v;
      }
    }
    return this;
  }

  /** A plain-object copy (structured-clone and JSON safe), e.g. to send to a primary process. */
  snapshot(): RelayMetricsSnapshot {
    const out = { peersDeniedByReason: { ...this.peersDeniedByReason } } as RelayMetricsSnapshot;
    for (const k of NUMERIC_FIELDS) out[k] = this[k];
    return out;
  }

  /**
   * Renders the Prometheus text exposition format (HELP and TYPE per family).
   *
   * @example
   * const m = new RelayMetrics();
   * m.packetsToPeer++;
   * m.render(); // "...homelink_relay_packets_total{direction=\"to_peer\"} 1\n..."
   */
  render(): string {
    return renderMetrics(this);
  }
}

/** The numeric fields of {@link RelayMetrics}. */
export type NumericField = {
  [K in keyof RelayMetrics]: RelayMetrics[K] extends number ? K : never;
}[keyof RelayMetrics];

/** A plain copy of {@link RelayMetrics} without methods. */
export type RelayMetricsSnapshot = { [K in NumericField]: number } & { peersDeniedByReason: Record<DenyReason, number> };

function zeroByReason(): Record<DenyReason, number> {
  const o = {} as Record<DenyReason, number>;
  for (const r of DENY_REASONS) o[r] = 0;
  return o;
}

const NUMERIC_FIELDS: readonly NumericField[] = Object.keys(new RelayMetrics()).filter(
  (k) => k !== 'peersDeniedByReason',
) as NumericField[];

type Family = {
  name: string;
  type: 'gauge' | 'counter';
  help: string;
  series: ReadonlyArray<readonly [labels: string, field: NumericField]>;
};

/** Every metric family: one place to read what the relay exports. */
const FAMILIES: readonly Family[] = [
  { name: 'allocations', type: 'gauge', help: 'Live TURN allocations.', series: [['', 'allocations']] },
  { name: 'permissions', type: 'gauge', help: 'Live TURN permissions.', series: [['', 'permissions']] },
  { name: 'channels', type: 'gauge', help: 'Live TURN channel bindings.', series: [['', 'channels']] },
  { name: 'stream_connections', type: 'gauge', help: 'Open TCP/TLS client connections.', series: [['', 'streamConnections']] },
  { name: 'allocations_created_total', type: 'counter', help: 'Allocations created.', series: [['', 'allocationsCreated']] },
  { name: 'allocations_expired_total', type: 'counter', help: 'Allocations that ended by expiry or refresh with lifetime 0.', series: [['', 'allocationsExpired']] },
  { name: 'requests_total', type: 'counter', help: 'STUN/TURN requests handled.', series: [['', 'requests']] },
  {
    name: 'packets_total',
    type: 'counter',
    help: 'Packets relayed, by direction.',
    series: [
      ['direction="to_peer"', 'packetsToPeer'],
      ['direction="to_client"', 'packetsToClient'],
    ],
  },
  {
    name: 'bytes_total',
    type: 'counter',
    help: 'Application payload bytes relayed, by direction.',
    series: [
      ['direction="to_peer"', 'bytesToPeer'],
      ['direction="to_client"', 'bytesToClient'],
    ],
  },
  {
    name: 'dropped_packets_total',
    type: 'counter',
    help: 'Packets dropped, by reason.',
    series: [
      ['reason="malformed"', 'dropMalformed'],
      ['reason="no_allocation"', 'dropNoAllocation'],
      ['reason="no_permission"', 'dropNoPermission'],
      ['reason="no_channel"', 'dropNoChannel'],
      ['reason="bandwidth"', 'dropBandwidth'],
      ['reason="send_failed"', 'dropSendFailed'],
      ['reason="backpressure"', 'dropBackpressure'],
    ],
  },
  { name: 'auth_challenges_total', type: 'counter', help: '401 challenges to requests sent without credentials (normal).', series: [['', 'authChallenges']] },
  {
    name: 'auth_failures_total',
    type: 'counter',
    help: 'Authentication failures, by reason.',
    series: [
      ['reason="missing_fields"', 'authMissingFields'],
      ['reason="stale_nonce"', 'authStaleNonce'],
      ['reason="bad_username"', 'authBadUsername'],
      ['reason="expired"', 'authExpired'],
      ['reason="bad_integrity"', 'authBadIntegrity'],
      ['reason="wrong_credentials"', 'authWrongCredentials'],
    ],
  },
  {
    name: 'quota_refusals_total',
    type: 'counter',
    help: 'Requests refused by a quota, by kind.',
    series: [
      ['kind="allocations_per_user"', 'quotaAllocationsPerUser'],
      ['kind="allocations_total"', 'quotaAllocationsTotal'],
      ['kind="permissions"', 'quotaPermissions'],
      ['kind="relay_ports"', 'quotaRelayPorts'],
      ['kind="stream_buffer"', 'quotaStreamBuffer'],
    ],
  },
];

/** Formats a sample value: integers exactly, anything non-finite as Prometheus spells it. */
function value(v: number): string {
  if (Number.isFinite(v)) return String(v);
  if (Number.isNaN(v)) return 'NaN';
  return v > 0 ? '+Inf' : '-Inf';
}

/** Renders any object with {@link RelayMetrics}' fields (see {@link RelayMetrics.render}). */
export function renderMetrics(m: RelayMetricsSnapshot): string {
  const lines: string[] = [];
  for (const f of FAMILIES) {
    const name = PREFIX + f.name;
    lines.push(`# HELP ${name} ${f.help}`, `# TYPE ${name} ${f.type}`);
    for (const [labels, field] of f.series) lines.push(`${name}${labels ? `{${labels}}` : ''} ${value(m[field])}`);
  }
  const denied = PREFIX + 'peers_denied_total';
  lines.push(`# HELP ${denied} Peer addresses refused by the peer policy, by reason.`, `# TYPE ${denied} counter`);
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
