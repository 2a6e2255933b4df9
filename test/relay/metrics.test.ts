import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { MetricsServerError, RelayMetrics, renderMetrics, startMetricsServer, type MetricsServer } from '../../relay/metrics.js';
import { DENY_REASONS } from '../../relay/policy.js';
import { COUNTERS } from '../../relay/turn/counters.js';

/** Parses exposition text into { "name{labels}": value } and checks every family has HELP and TYPE before its samples. */
function parseExposition(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  const typed = new Set<string>();
  const helped = new Set<string>();
  expect(text.endsWith('\n')).toBe(true);
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const help = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*$/.exec(line);
    if (help) {
      helped.add(help[1]!);
      continue;
    }
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge)$/.exec(line);
    if (type) {
      expect(typed.has(type[1]!), `duplicate TYPE ${type[1]}`).toBe(false);
      typed.add(type[1]!);
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-z_]+="[a-z_]+"\})? (-?\d+(?:\.\d+)?(?:e[+-]?\d+)?|NaN|[+-]Inf)$/.exec(line);
    expect(sample, `bad line: ${line}`).not.toBeNull();
    const name = sample![1]!;
    expect(typed.has(name) && helped.has(name), `sample before HELP/TYPE: ${line}`).toBe(true);
    if (name.endsWith('_total')) expect(line).toMatch(/^\S+ /);
    const key = name + (sample![2] ?? '');
    expect(samples.has(key), `duplicate series ${key}`).toBe(false);
    samples.set(key, Number(sample![3]));
  }
  return samples;
}

describe('RelayMetrics.render', () => {
  it('renders every counter with HELP/TYPE lines and fixed label sets', () => {
    const m = new RelayMetrics();
    m.allocations = 3;
    m.permissions = 5;
    m.channels = 2;
    m.packetsToPeer += 10;
    m.bytesToPeer += 1200;
    m.packetsToClient += 9;
    m.bytesToClient += 1080;
    m.authStaleNonce++;
    m.authWrongCredentials += 2;
    m.peersDenied += 2;
    m.peersDeniedByReason.loopback++;
    m.peersDeniedByReason.link_local++;
    m.quotaAllocationsPerUser++;
    m.dropSendFailed += 4;
    const s = parseExposition(m.render());
    expect(s.get('homelink_relay_allocations')).toBe(3);
    expect(s.get('homelink_relay_permissions')).toBe(5);
    expect(s.get('homelink_relay_channels')).toBe(2);
    expect(s.get('homelink_relay_packets_total{direction="to_peer"}')).toBe(10);
    expect(s.get('homelink_relay_bytes_total{direction="to_peer"}')).toBe(1200);
    expect(s.get('homelink_relay_packets_total{direction="to_client"}')).toBe(9);
    expect(s.get('homelink_relay_bytes_total{direction="to_client"}')).toBe(1080);
    expect(s.get('homelink_relay_auth_failures_total{reason="stale_nonce"}')).toBe(1);
    expect(s.get('homelink_relay_auth_failures_total{reason="wrong_credentials"}')).toBe(2);
    expect(s.get('homelink_relay_peers_denied_total{reason="loopback"}')).toBe(1);
    expect(s.get('homelink_relay_peers_denied_total{reason="link_local"}')).toBe(1);
    expect(s.get('homelink_relay_peers_denied_total{reason="private"}')).toBe(0);
    expect(s.get('homelink_relay_quota_refusals_total{kind="allocations_per_user"}')).toBe(1);
    expect(s.get('homelink_relay_dropped_packets_total{reason="send_failed"}')).toBe(4);
    for (const r of DENY_REASONS) expect(s.has(`homelink_relay_peers_denied_total{reason="${r}"}`)).toBe(true);
  });

  it('has a constant number of series however much traffic it counts', () => {
    const m = new RelayMetrics();
    const before = parseExposition(m.render()).size;
    for (let i = 0; i < 10_000; i++) {
      m.packetsToPeer++;
      m.bytesToPeer += i;
      m.peersDeniedByReason[DENY_REASONS[i % DENY_REASONS.length]!]++;
    }
    expect(parseExposition(m.render()).size).toBe(before);
  });

  it('renders every counter of the one table once, and carries each through a worker snapshot', () => {
    const m = new RelayMetrics();
    COUNTERS.forEach((d, i) => (m[d.field] = 1000 + i));
    // The way a worker's counters reach the primary: JSON over IPC, then summed.
    const total = new RelayMetrics().add(JSON.parse(JSON.stringify(m.snapshot())));
    const s = parseExposition(total.render());
    COUNTERS.forEach((d, i) => {
      expect(total[d.field]).toBe(1000 + i);
      if (d.family === null) return;
      expect(s.get(`homelink_relay_${d.family}${d.labels ? `{${d.labels}}` : ''}`), d.field).toBe(1000 + i);
    });
    // Nothing else: the table's series, the per-reason denials and nothing keyed by a user.
    const exported = COUNTERS.filter((d) => d.family !== null).length + DENY_REASONS.length;
    expect(s.size).toBe(exported);
    expect(new Set(COUNTERS.map((d) => d.field)).size).toBe(COUNTERS.length);
  });

  it('sums worker snapshots and ignores junk in them', () => {
    const a = new RelayMetrics();
    a.allocations = 2;
    a.packetsToPeer = 100;
    a.peersDeniedByReason.private = 1;
    const b = new RelayMetrics();
    b.allocations = 3;
    b.packetsToPeer = 50;
    b.peersDeniedByReason.private = 2;
    const total = new RelayMetrics().add(a.snapshot()).add(JSON.parse(JSON.stringify(b.snapshot())));
    total.add({ allocations: Number.NaN, peersDeniedByReason: { bogus: 5 } as never });
    const s = parseExposition(renderMetrics(total.snapshot()));
    expect(s.get('homelink_relay_allocations')).toBe(5);
    expect(s.get('homelink_relay_packets_total{direction="to_peer"}')).toBe(150);
    expect(s.get('homelink_relay_peers_denied_total{reason="private"}')).toBe(3);
    expect(total.render()).not.toContain('bogus');
  });
});

describe('startMetricsServer on a real socket', () => {
  let srv: MetricsServer | undefined;
  afterEach(async () => {
    await srv?.close();
    srv = undefined;
  });

  it('serves /metrics and /health on 127.0.0.1', async () => {
    const m = new RelayMetrics();
    let healthy = true;
    srv = await startMetricsServer(m, { port: 0, health: () => ({ ok: healthy, allocations: m.allocations, draining: !healthy }) });
    const base = `http://127.0.0.1:${srv.port}`;

    m.allocations = 7;
    m.packetsToClient = 42;
    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const s = parseExposition(await res.text());
    expect(s.get('homelink_relay_allocations')).toBe(7);
    expect(s.get('homelink_relay_packets_total{direction="to_client"}')).toBe(42);
    expect(s.get('process_resident_memory_bytes')).toBeGreaterThan(0);

    m.packetsToClient++;
    const again = parseExposition(await (await fetch(`${base}/metrics?x=1`)).text());
    expect(again.get('homelink_relay_packets_total{direction="to_client"}')).toBe(43);

    const h = await fetch(`${base}/health`);
    expect(h.status).toBe(200);
    expect(await h.json()).toEqual({ ok: true, allocations: 7, draining: false });
    healthy = false;
    const h2 = await fetch(`${base}/health`);
    expect(h2.status).toBe(503);
    expect(await h2.json()).toEqual({ ok: false, allocations: 7, draining: true });
  });

  it('answers other paths and methods with 404/405, and survives throwing callbacks', async () => {
    srv = await startMetricsServer(
      {
        render: () => {
          throw new Error('boom secret=hunter2');
        },
      },
      {
        port: 0,
        health: () => {
          throw new Error('boom');
        },
      },
    );
    const base = `http://127.0.0.1:${srv.port}`;
    expect((await fetch(`${base}/`)).status).toBe(404);
    expect((await fetch(`${base}/metrics/../etc/passwd`)).status).toBe(404);
    const post = await fetch(`${base}/metrics`, { method: 'POST', body: 'x' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    const bad = await fetch(`${base}/metrics`);
    expect(bad.status).toBe(500);
    expect(await bad.text()).not.toContain('hunter2');
    expect((await fetch(`${base}/health`)).status).toBe(503);
  });

  it('refuses oversized headers with 431 and garbage with 400, then still serves', async () => {
    srv = await startMetricsServer(new RelayMetrics(), { port: 0, health: () => ({ ok: true }) });
    const port = srv.port;
    const raw = (payload: string): Promise<string> =>
      new Promise((resolve, reject) => {
        const sock = connect(port, '127.0.0.1');
        let got = '';
        sock.setEncoding('latin1');
        sock.on('data', (d: string) => (got += d));
        sock.on('end', () => resolve(got));
        sock.on('close', () => resolve(got));
        sock.on('error', reject);
        sock.setTimeout(5000, () => sock.destroy());
        sock.end(payload);
      });
    expect(await raw(`GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(16 * 1024)}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 431/);
    expect(await raw('\x00\x01\x02 not http\r\n\r\n')).toMatch(/^HTTP\/1\.1 400/);
    expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
  });

  it('rejects with a typed error when the port is taken', async () => {
    srv = await startMetricsServer(new RelayMetrics(), { port: 0, health: () => ({ ok: true }) });
    const taken = srv.port;
    const err = await startMetricsServer(new RelayMetrics(), { port: taken, health: () => ({ ok: true }) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MetricsServerError);
    expect((err as Error).message).toContain(`127.0.0.1:${taken}`);
  });
});
