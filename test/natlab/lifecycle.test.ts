/**
 * Lifecycle scenarios of the product stack in the NAT lab (issue 9):
 *
 * "silent mapping loss" (item 1): a hub behind a port-restricted NAT is connected and idle; its
 * router then loses all conntrack state (`conntrack -F`), so the signaling TCP connection's
 * mapping is gone without a RST. The router is set up so that packets of the old connection are
 * dropped afterwards (no mid-stream pickup, invalid packets dropped), as on a home router that
 * rebooted or timed the mapping out. Measured: time until the hub is registered again, and until
 * a dial to it succeeds (goal: within 60 s; before keepalives it stayed unreachable for good).
 * The first dial goes out right after the flush, while the service still counts the hub's dead
 * socket as present: confirmed delivery (the hub's receipt, `ringing`) turns it into `PeerOffline`
 * at the ack deadline (before that change it hung until its own `Timeout`). No dial may end in
 * `Timeout`.
 *
 * "peer Ctrl-C" (item 4): two endpoints connected by the CLI's own code, linked through the relay;
 * the dialing process gets SIGINT. Measured: time until the other side reports the close, and
 * the relay's allocation gauge returning to its baseline.
 *
 * Keepalive and every other timing run with the library's defaults: the figures are the product's.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeLabTls, type LabTls } from './coturn.js';
import { Lab, type Host, type LabProcess } from './lab.js';
import { startHomelinkStack, type HomelinkStack } from './stack-homelink.js';
import type { LifecyclePeerConfig } from './peer-lifecycle.js';
import { labAvailable, tsxArgs, waitForLine } from './support.js';
import { DELIVERY_ACK_MS } from '../../worker/presence-rules.js';

/** The goal: reachable again within 60 s of a silent mapping loss. */
const RECOVERY_GOAL_MS = 60_000;
/**
 * Idle time before the flush: longer than one keepalive interval (25 s), so the hub has pinged
 * at least once and stayed online meanwhile.
 */
const IDLE_BEFORE_FLUSH_MS = 30_000;
/** Each dial during recovery waits this long (the client's default 20 s). */
const DIAL_TIMEOUT_MS = 20_000;
/** Bound on the whole recovery loop: well past the goal, so a miss is measured, not cut off. */
const RECOVERY_BOUND_MS = 120_000;
const METRICS_PORT = 9478;
const READY_TIMEOUT_MS = 60_000;

interface PeerHandle {
  readonly proc: LabProcess;
  /** Events so far: [unix ms, text]. */
  events(): Array<[number, string]>;
  waitEvent(re: RegExp, afterMs: number, timeoutMs: number): Promise<[number, string]>;
  send(line: string): void;
}

function peer(lab: Lab, host: Host, cfg: LifecyclePeerConfig): PeerHandle {
  const proc = lab.spawn(host.ns, process.execPath, tsxArgs('test/natlab/peer-lifecycle.ts', JSON.stringify(cfg)));
  const events = (): Array<[number, string]> =>
    proc
      .stdout()
      .split('\n')
      .map((l) => /^E (\d+) (.*)$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [Number(m[1]), m[2]!] as [number, string]);
  return {
    proc,
    events,
    async waitEvent(re, afterMs, timeoutMs) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const hit = events().find(([t, e]) => t >= afterMs && re.test(e));
        if (hit) return hit;
        if (Date.now() > until || proc.child.exitCode !== null) {
          throw new Error(`no event ${String(re)} within ${timeoutMs} ms; events: ${JSON.stringify(events())}; stderr: ${proc.stderr().slice(-1500)}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    send: (line) => void proc.child.stdin?.write(line + '\n'),
  };
}

/**
 * Makes a lost mapping stay lost: with `nf_conntrack_tcp_loose=0` conntrack does not adopt a
 * mid-stream TCP packet as a new connection (it would otherwise re-create the mapping on the
 * next outbound packet and hide the loss), and such packets are dropped as invalid in both
 * directions. A fresh connection (SYN) still gets a new mapping.
 */
async function dropLostMappings(lab: Lab, router: string): Promise<void> {
  await lab.exec(router, 'sysctl', ['-q', '-w', 'net.netfilter.nf_conntrack_tcp_loose=0']);
  await lab.exec(router, 'nft', ['insert', 'rule', 'ip', 'homelab', 'forward', 'ct', 'state', 'invalid', 'drop']);
}

describe.skipIf(!labAvailable())('NAT lab: signaling keepalive and clean close', () => {
  let lab: Lab;
  let tls: LabTls;
  let stack: HomelinkStack;

  beforeAll(async () => {
    lab = await Lab.create();
    tls = makeLabTls(lab.runId);
    stack = await startHomelinkStack(lab, tls, { metricsPort: METRICS_PORT });
  });

  afterAll(async () => {
    await stack?.stop().catch(() => undefined);
    const runId = lab?.runId;
    await lab?.destroy();
    if (runId) expect(Lab.existingNamespaces(runId), 'namespaces left behind').toEqual([]);
    tls?.dispose();
  });

  const base = (id: string, home: string, host: Host): LifecyclePeerConfig => ({
    id,
    home,
    signalingUrl: stack.signalingUrl,
    issuerDir: stack.issuerDir,
    caFile: tls.cert,
    hostAddress: host.address,
  });

  it('silent mapping loss: the hub is registered again and a dial succeeds within 60 s', async () => {
    const home = await lab.addHome('port-restricted');
    const appHost = await lab.addOpenHost();
    try {
      await dropLostMappings(lab, home.router);
      const hub = peer(lab, home.hosts[0]!, base('hub-ml', 'home-ml', home.hosts[0]!));
      const app = peer(lab, appHost, base('app-ml', 'home-ml', appHost));
      await Promise.all([waitForLine(hub.proc, /^ready$/, READY_TIMEOUT_MS, 'hub'), waitForLine(app.proc, /^ready$/, READY_TIMEOUT_MS, 'app')]);
      // Reachable before: one dial, closed again.
      app.send(`dial hub-ml ${DIAL_TIMEOUT_MS}`);
      await app.waitEvent(/^dial-ok /, 0, DIAL_TIMEOUT_MS + 5_000);
      app.send('close-links');
      await app.waitEvent(/^links-closed$/, 0, 10_000);
      await new Promise((r) => setTimeout(r, IDLE_BEFORE_FLUSH_MS));
      expect(hub.events().filter(([, e]) => e === 'offline'), 'hub went offline while idle (keepalive must hold the path)').toEqual([]);

      const flushedAt = Date.now();
      await lab.exec(home.router, 'conntrack', ['-F']);
      // Dial again and again from the flush on, as an app would, until one succeeds.
      // The first one inside the window: the service still holds the hub's dead socket.
      const outcomes: Array<{ startedMs: number; endedMs: number; result: string }> = [];
      let okAt: number | null = null;
      while (okAt === null && Date.now() - flushedAt < RECOVERY_BOUND_MS) {
        const started = Date.now();
        app.send(`dial hub-ml ${DIAL_TIMEOUT_MS}`);
        const [t, e] = await app.waitEvent(/^dial-(ok|fail) /, started, DIAL_TIMEOUT_MS + 10_000);
        outcomes.push({ startedMs: started - flushedAt, endedMs: t - flushedAt, result: e });
        if (e.startsWith('dial-ok')) okAt = t;
        else await new Promise((r) => setTimeout(r, 1_000));
      }
      const after = (name: string): number | null => hub.events().find(([t, e]) => t >= flushedAt && e === name)?.[0] ?? null;
      const since = (t: number | null): number | null => (t === null ? null : t - flushedAt);
      const first = outcomes[0]!;
      const figures = {
        firstDial: first,
        detectedMs: since(after('offline')),
        registeredAgainMs: since(after('online')),
        dialSucceededMs: since(okAt),
        outcomes,
      };
      console.log(`silent mapping loss: ${JSON.stringify(figures)}`);
      // The dial inside the window ends PeerOffline (or, had the hub been quicker, succeeds), and
      // it ends about when the ack deadline passes, long before its own timeout would.
      expect(first.startedMs, 'the first dial must go out inside the window').toBeLessThan(DELIVERY_ACK_MS);
      expect(first.result).toMatch(/^dial-(ok|fail PeerOffline)/);
      expect(first.endedMs - first.startedMs).toBeLessThan(DIAL_TIMEOUT_MS);
      expect(outcomes.filter((o) => o.result === 'dial-fail Timeout'), `a dial hung until its own timeout: ${JSON.stringify(figures)}`).toEqual([]);
      expect(figures.dialSucceededMs, `no dial succeeded within ${RECOVERY_BOUND_MS} ms: ${JSON.stringify(figures)}`).not.toBeNull();
      expect(figures.registeredAgainMs, `the hub never re-registered: ${JSON.stringify(figures)}`).not.toBeNull();
      expect(figures.registeredAgainMs!).toBeLessThan(RECOVERY_GOAL_MS);
      expect(figures.dialSucceededMs!).toBeLessThan(RECOVERY_GOAL_MS);
      // Every dial started once the hub was back succeeded.
      expect(outcomes.filter((o) => o.startedMs >= figures.registeredAgainMs! && !o.result.startsWith('dial-ok'))).toEqual([]);
    } finally {
      await lab.removeHome(home);
      await lab.removeOpenHost(appHost);
    }
  });

  it('peer Ctrl-C: the other side learns of the close at once, the relay frees the allocations', async () => {
    const homeA = await lab.addHome('port-restricted');
    const homeB = await lab.addHome('port-restricted');
    try {
      const baseline = await stack.allocations();
      const hubHost = homeA.hosts[0]!;
      const appHost = homeB.hosts[0]!;
      const hub = peer(lab, hubHost, { ...base('hub-cc', 'home-cc', hubHost), cli: true, forceRelay: true });
      const app = peer(lab, appHost, { ...base('app-cc', 'home-cc', appHost), cli: true, forceRelay: true });
      await Promise.all([waitForLine(hub.proc, /^ready$/, READY_TIMEOUT_MS, 'hub'), waitForLine(app.proc, /^ready$/, READY_TIMEOUT_MS, 'app')]);
      app.send(`dial hub-cc ${DIAL_TIMEOUT_MS}`);
      const [, ok] = await app.waitEvent(/^dial-(ok|fail) /, 0, DIAL_TIMEOUT_MS + 10_000);
      expect(ok).toBe('dial-ok relay');
      await hub.waitEvent(/^link-open app-cc /, 0, 10_000);
      expect(await stack.allocations()).toBeGreaterThanOrEqual(baseline + 2);

      const sigintAt = Date.now();
      process.kill(app.proc.child.pid!, 'SIGINT');
      const [closedAt, closed] = await hub.waitEvent(/^link-close /, sigintAt, 30_000);
      const code = await Promise.race([app.proc.exited, new Promise<'bound'>((r) => setTimeout(() => r('bound'), 20_000))]);
      const exitedAt = Date.now();
      let gaugeAt = Date.now();
      let gauge = await stack.allocations();
      while (gauge !== baseline && Date.now() - sigintAt < 30_000) {
        await new Promise((r) => setTimeout(r, 100));
        gauge = await stack.allocations();
        gaugeAt = Date.now();
      }
      const figures = { peerLearnedMs: closedAt - sigintAt, reason: closed, exitCode: code, exitedByMs: exitedAt - sigintAt, gaugeBackMs: gaugeAt - sigintAt };
      console.log(`peer Ctrl-C: ${JSON.stringify(figures)}`);
      expect(closed).toBe('link-close peer closed: endpoint closed');
      expect(code).toBe(130);
      expect(gauge).toBe(baseline);
    } finally {
      await lab.removeHome(homeA);
      await lab.removeHome(homeB);
    }
  });
});
