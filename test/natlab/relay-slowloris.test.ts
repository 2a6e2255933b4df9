/**
 * NAT lab scenario "relay TLS slowloris" (issue 9 item 6): a hostile host on the public side
 * keeps far more connections open to our relay than it accepts in all, as TLS handshakes that
 * never finish and TCP frames dribbled a byte at a time. An endpoint behind a UDP-blocking
 * firewall (only TCP 443 leaves its home) must still get a TURN/TLS allocation.
 *
 * The relay accepts 2 x maxAllocations connections per listener (here 2 x 20 = 40). The control
 * run first shows the attack is real: with the per-source cap out of the way and deadlines as
 * long as the old behaviour's, the hostile host holds every TLS slot and the endpoint is
 * refused. The protected run, with the per-source cap and short deadlines, lets it in.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeLabTls, type LabTls } from './coturn.js';
import { Lab, PUB, type Host, type LabProcess } from './lab.js';
import { FIREWALL_TCP_PORT } from './nat.js';
import { labAvailable, tsxArgs, waitForLine } from './support.js';

const TURN_PORT = 3478;
const MAX_ALLOCATIONS = 20;
/** The hostile host aims at twice what both listeners accept together. */
const HOSTILE_CONCURRENCY = MAX_ALLOCATIONS * 2 * 2 * 2;
/** Start-up of a relay or a tsx script on a busy machine. */
const START_TIMEOUT_MS = 60_000;
/** How long the legit endpoint waits for each step. */
const LEGIT_DEADLINE_MS = 15_000;
const SECRET = randomBytes(24).toString('hex');
const METRICS_PORT = 9478;

describe.skipIf(!labAvailable())('NAT lab: relay TLS slowloris', () => {
  let lab: Lab;
  let tls: LabTls;
  let attacker: Host;
  let endpoint: Host;

  beforeAll(async () => {
    lab = await Lab.create();
    tls = makeLabTls(lab.runId);
    attacker = await lab.addOpenHost();
    endpoint = (await lab.addHome('udp-blocked')).hosts[0]!;
  }, 120_000);

  afterAll(async () => {
    const runId = lab?.runId;
    await lab?.destroy();
    tls?.dispose();
    if (runId) expect(Lab.existingNamespaces(runId)).toEqual([]);
  });

  async function startRelay(limits: string[]): Promise<LabProcess> {
    const relay = lab.spawn(lab.pub, process.execPath, tsxArgs(
      'relay/main.ts',
      '--secret', SECRET,
      '--listen-host', PUB.relay, '--relay-host', PUB.relay,
      '--udp-port', String(TURN_PORT), '--tcp-port', String(TURN_PORT),
      '--tls-port', String(FIREWALL_TCP_PORT), '--tls-cert', tls.cert, '--tls-key', tls.key,
      '--allow', '198.18.0.0/15', '--allow', '203.0.113.0/24',
      '--max-allocations', String(MAX_ALLOCATIONS),
      '--metrics-host', PUB.relay, '--metrics-port', String(METRICS_PORT), '--drain-ms', '0', '--log-level', 'warn',
      ...limits,
    ));
    // Ready when the TLS port accepts (ss in pub), bounded.
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      const ss = await lab.exec(lab.pub, 'ss', ['-lnt', `sport = :${FIREWALL_TCP_PORT}`]).catch(() => ({ stdout: '' }));
      if (ss.stdout.includes(`${PUB.relay}:${FIREWALL_TCP_PORT}`)) return relay;
      if (relay.child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    await relay.stop();
    throw new Error(`relay did not start: ${relay.stderr().slice(-1500)}`);
  }

  function startHostile(): LabProcess {
    const cfg = { relay: PUB.relay, tlsPort: FIREWALL_TCP_PORT, tcpPort: TURN_PORT, concurrency: HOSTILE_CONCURRENCY, maxConnections: 100_000, runMs: 120_000 };
    return lab.spawn(attacker.ns, process.execPath, tsxArgs('test/natlab/relay-slowloris-peer.ts', 'hostile', JSON.stringify(cfg)));
  }

  function lastStats(p: LabProcess): { open: number; maxOpen: number; opened: number; refusedFast: number; closedLater: number } | null {
    const lines = p.stdout().split('\n').filter((l) => l.startsWith('stats '));
    return lines.length ? JSON.parse(lines.at(-1)!.slice(6)) : null;
  }

  /** Waits until the hostile host has held connections for a while and tried more than the relay accepts. */
  async function attackUnderWay(p: LabProcess, minOpen: number): Promise<void> {
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      const s = lastStats(p);
      if (s && s.opened > HOSTILE_CONCURRENCY && s.open >= minOpen) return;
      if (p.child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`attack did not get going: ${JSON.stringify(lastStats(p))} ${p.stderr().slice(-1000)}`);
  }

  /** The endpoint's verdict line; it first checks that its UDP to the relay is blocked. */
  async function legitAttempt(): Promise<string> {
    const cfg = { relay: PUB.relay, tlsPort: FIREWALL_TCP_PORT, udpPort: TURN_PORT, secret: SECRET, caFile: tls.cert, deadlineMs: LEGIT_DEADLINE_MS };
    const p = lab.spawn(endpoint.ns, process.execPath, tsxArgs('test/natlab/relay-slowloris-peer.ts', 'legit', JSON.stringify(cfg)));
    try {
      const line = await waitForLine(p, /^(allocated|failed) /, START_TIMEOUT_MS + LEGIT_DEADLINE_MS * 3, 'legit endpoint');
      expect(p.stdout()).toMatch(/^udp blocked$/m);
      return line;
    } finally {
      await p.stop();
    }
  }

  async function metrics(): Promise<string> {
    const r = await lab.exec(lab.pub, process.execPath, ['-e', `fetch('http://${PUB.relay}:${METRICS_PORT}/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))`]);
    return r.stdout;
  }

  const series = (text: string, name: string): number => Number(text.split('\n').find((l) => l.startsWith(name + ' '))?.split(' ')[1] ?? NaN);

  it('control: without a per-source cap and with long deadlines, the hostile host locks the endpoint out', async () => {
    const relay = await startRelay(['--max-streams-per-ip', '100000', '--stream-handshake-timeout-ms', '600000', '--stream-idle-timeout-ms', '600000']);
    const hostile = startHostile();
    try {
      await attackUnderWay(hostile, MAX_ALLOCATIONS * 2 * 2);
      const line = await legitAttempt();
      // Refused at accept (the TLS listener is full), before any TLS byte.
      expect(line).toMatch(/^failed closed before the TLS handshake finished/);
      expect(lastStats(hostile)!.maxOpen).toBeGreaterThanOrEqual(MAX_ALLOCATIONS * 2 * 2);
    } finally {
      await hostile.stop();
      await relay.stop();
    }
  });

  it('with the per-source cap and deadlines, the endpoint behind the UDP-blocking firewall gets a TURN/TLS allocation', async () => {
    const relay = await startRelay(['--max-streams-per-ip', '16', '--stream-handshake-timeout-ms', '3000', '--stream-idle-timeout-ms', '4000']);
    const hostile = startHostile();
    try {
      await attackUnderWay(hostile, 8);
      // Let every kind of refusal and deadline happen at least once before the endpoint tries.
      await new Promise((r) => setTimeout(r, 5_000));
      const line = await legitAttempt();
      expect(line).toMatch(new RegExp(`^allocated ${PUB.relay.replace(/\./g, '\\.')}:\\d+$`));
      const text = await metrics();
      expect(series(text, 'homelink_relay_stream_refusals_total{reason="per_ip"}')).toBeGreaterThan(0);
      expect(series(text, 'homelink_relay_stream_timeouts_total{phase="handshake"}')).toBeGreaterThan(0);
      expect(series(text, 'homelink_relay_stream_timeouts_total{phase="idle"}')).toBeGreaterThan(0);
      expect(series(text, 'homelink_relay_allocations_created_total')).toBe(1);
      // The relay holds no more of the hostile host's connections than its share, and the attack
      // was still going when the endpoint got in.
      expect(series(text, 'homelink_relay_stream_connections')).toBeLessThanOrEqual(16);
      expect(hostile.child.exitCode).toBeNull();
    } finally {
      await hostile.stop();
      await relay.stop();
    }
  });
});
