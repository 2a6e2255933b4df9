/**
 * Dialing under CPU starvation (issue 9, item 7): on a loaded machine a dial must still open, or,
 * where its budget is truly exceeded, fail with `Timeout` at the dialer's deadline on both sides,
 * never leaving one side with a link the other gave up on.
 *
 * Both endpoint processes (one behind each of two port-restricted NATs, so the path needs hole
 * punching) are moved into a cgroup of their own (cpu-cgroup.ts, v1 or v2) once they are online.
 * The same pair then dials 5 times unlimited and 5 times under a CFS quota that lets the two
 * processes together use `STARVED_CPUS` of one CPU; the relay and signaling run unlimited. Every
 * dial uses the library's default deadline, opens a channel and has one message echoed (both
 * ends open), then closes the link. A third round gives each dial a budget far too short for the
 * quota: each must end in `Timeout` on the dialer and, on the answering side, in `Timeout` or no
 * link at all, never an open link the dialer does not have.
 *
 * Times (dial to open, from the dialer) are measured, not asserted; they go to
 * `test-output/starvation.json` and, when every round passed, to docs/NATLAB.md.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeLabTls, type LabTls } from './coturn.js';
import { CGROUP_SKIP_LINE, cpuCgroupAvailable, cpuCgroupVersion, CpuGroup, removeStaleCpuGroups, type CpuThrottling } from './cpu-cgroup.js';
import { Lab, type Home, type LabProcess } from './lab.js';
import type { StarvePeerConfig } from './peer-starve.js';
import { loadText, writeSection } from './report-section.js';
import { startHomelinkStack, type HomelinkStack } from './stack-homelink.js';
import { dumpOnFailure, labAvailable, onLines, tsxArgs, waitForLine } from './support.js';

/** Dials per round: the issue's "2 of 5 failed". */
const DIALS = 5;
/**
 * The two endpoints' share of one CPU while starved: a twentieth, in 100 ms periods, so each
 * period they run 5 ms between them and are parked 95 ms (the timers of ICE checks, DTLS
 * retransmits and keepalives fire up to 95 ms late, and CPU-bound steps such as key generation
 * take twenty times as long). Measured here: a tenth opened dials in about 1.3 s, a 25th in
 * 3.5-8.6 s, so a twentieth starves hard while a 20 s budget still holds.
 * NATLAB_STARVE_CPUS overrides it while experimenting.
 */
const STARVED_CPUS = Number(process.env['NATLAB_STARVE_CPUS'] ?? 0.05);
/** CFS period (the kernel's default, 100 ms). */
const PERIOD_US = 100_000;
/** A budget the starved pair cannot meet (an unstarved dial here takes about 0.3 s of CPU over both sides). */
const SHORT_BUDGET_MS = 1_000;
/** How much CPU the pair gets for the short-budget round: starved harder still. */
const SHORT_BUDGET_CPUS = 0.02;
/** Bound on waiting for one dial's outcome: the library's 20 s default deadline plus a close and start-up slack. */
const DIAL_WAIT_MS = 60_000;
/** After a failed dial, the answering side has this long to report how its side ended (it is starved too). */
const SETTLE_MS = 30_000;

interface DialEvent {
  readonly t: number;
  readonly event: string;
  readonly n?: number;
  readonly ok?: boolean;
  readonly code?: string;
  readonly openMs?: number;
  readonly failMs?: number;
  readonly echoMs?: number;
  readonly path?: string | null;
  readonly sessionId?: string;
  readonly acceptMs?: number;
  readonly reason?: string;
  readonly message?: string;
}

interface Round {
  readonly name: string;
  readonly cpus: number | null;
  readonly budgetMs: number | null;
  readonly dials: DialEvent[];
  /** What the answering side saw for each dial, in order. */
  readonly answers: Array<{ accepted?: DialEvent; failed?: DialEvent; closed?: DialEvent }>;
  readonly throttling: CpuThrottling | null;
  readonly load: string;
}

const rounds: Round[] = [];
/** The report section is written only when every round passed. */
let openRoundsPassed = false;

/** Collects a process's `E <json>` lines. */
function events(proc: LabProcess): { list: DialEvent[]; wait(pred: (e: DialEvent) => boolean, ms: number, what: string): Promise<DialEvent> } {
  const list: DialEvent[] = [];
  const waiters: Array<{ pred: (e: DialEvent) => boolean; resolve: (e: DialEvent) => void }> = [];
  onLines(proc, (line) => {
    if (!line.startsWith('E ')) return;
    const e = JSON.parse(line.slice(2)) as DialEvent;
    list.push(e);
    for (const w of [...waiters]) {
      if (w.pred(e)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(e);
      }
    }
  });
  return {
    list,
    wait(pred, ms, what) {
      const seen = list.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const w = { pred, resolve: (e: DialEvent) => (clearTimeout(timer), resolve(e)) };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`${what}: not within ${ms} ms; events: ${JSON.stringify(list.slice(-8))}; stderr: ${proc.stderr().slice(-1500)}`));
        }, ms);
        waiters.push(w);
      });
    },
  };
}

/**
 * The answering side's accept failed because the request was withdrawn (`cancelled`: the dialer
 * gave up, or the service timed the request out) before any session existed on that side: no
 * link, no room, nothing half-open. The library reports it as `Closed`; the `cancelled` message
 * carries no reason, so it cannot tell a timeout from a dialer's abort (see the report).
 */
function withdrawn(e: DialEvent): boolean {
  return e.code === 'Closed' && /request ended before a session \(cancelled\)/.test(e.message ?? '');
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : Math.round((s[s.length / 2 - 1]! + s[s.length / 2]!) / 2);
}

function section(): string {
  const row = (r: Round): string => {
    const ok = r.dials.filter((d) => d.ok);
    const times = r.dials.map((d) => (d.ok ? String(d.openMs) : `${d.code} at ${d.failMs}`)).join(', ');
    // Where the dialer had a budget, the answering side's end is given against the dialer's deadline.
    const answerer = r.answers
      .map((a, i) => {
        if (a.accepted) return 'open';
        if (!a.failed) return 'no request';
        const d = r.dials[i]!;
        const deadline = r.budgetMs !== null && d.failMs !== undefined ? d.t - d.failMs + r.budgetMs : null;
        const what = withdrawn(a.failed) ? 'withdrawn (Closed)' : a.failed.code;
        return deadline === null ? what : `${what} at ${a.failed.t - deadline >= 0 ? '+' : ''}${a.failed.t - deadline}`;
      })
      .join(', ');
    const thr = r.throttling ? `${r.throttling.nrThrottled} of ${r.throttling.nrPeriods} periods, ${(r.throttling.throttledMs / 1000).toFixed(1)} s` : '-';
    return `| ${r.name} | ${r.cpus === null ? 'unlimited' : `${r.cpus} CPU`} | ${r.budgetMs === null ? 'default (20 s)' : `${r.budgetMs} ms`} | ${ok.length} of ${r.dials.length} | ${times} | ${ok.length ? median(ok.map((d) => d.openMs!)) : '-'} | ${answerer} | ${thr} | ${r.load} |`;
  };
  return [
    '## Dialing under CPU starvation',
    '',
    'Generated by `test/natlab/starvation.test.ts` (`flock /tmp/natlab.lock npx vitest run --project natlab test/natlab/starvation.test.ts`, as root with a cgroup `cpu` controller, v1 or v2); every passing run rewrites this section.',
    '',
    `Two endpoints behind port-restricted NATs (a direct path needs hole punching), online first, then moved into a cgroup of their own (cgroup v${cpuCgroupVersion()}; \`test/natlab/cpu-cgroup.ts\`). The same pair dials ${DIALS} times per round: unlimited, then with a CFS quota giving both processes together ${STARVED_CPUS} of one CPU (${Math.round(STARVED_CPUS * PERIOD_US / 1000)} ms per ${PERIOD_US / 1000} ms period; timers fire up to ${Math.round((1 - STARVED_CPUS) * PERIOD_US / 1000)} ms late and CPU-bound steps run ${Math.round(1 / STARVED_CPUS)}x slower), then with ${SHORT_BUDGET_CPUS} CPU and a ${SHORT_BUDGET_MS} ms dial budget that cannot be met. Relay and signaling run unlimited. A dial counts as open when the dialer has the link and one message came back through a channel (both ends open). Asserted: every dial of the first two rounds opens on both sides; every dial of the third ends in \`Timeout\` at the dialer, and at the answering side in \`Timeout\` (its session ran into the shared deadline, or the dialer's bye said so) or, where the request was withdrawn before a session existed there, in a failed \`accept()\` with no link (never an open link the dialer gave up on). Times are measured, not asserted; the answering side's end is given against the dialer's deadline (+ after it).`,
    '',
    '| round | CPU for both endpoints | dial budget | opened | dial → open (ms), each dial | median (ms) | answering side, each dial | throttled (cgroup cpu.stat) | load (1/5/15 min) |',
    '|---|---|---|---|---|---|---|---|---|',
    ...rounds.map(row),
    '',
    'Knobs: \`NATLAB_STARVE_CPUS=<share of one CPU>\` changes the starved round\'s quota; \`NATLAB_NO_CGROUP=1\` behaves as a machine without a cgroup \`cpu\` controller (the suite prints \`skipped: needs a cgroup cpu controller\` once). The group is named \`homelink-natlab-<run id>-<n>\` and removed at the end; groups of dead runs are removed at the next start.',
    '',
    'Where the end of the request overtakes the answering side\'s \`accept()\` (a starved side reads the request late, and the dialer\'s \`cancel\` or the service\'s timeout is already queued behind it), \`cancelled\` says \`reason: \'timeout\'\` when the dialer\'s budget ran out (the dialer\'s own timeout, the service\'s deadline, or an answer that reached the service after it), and \`accept()\` rejects with \`Timeout\` like the dial (since 2026-12-07; before, every such case read \`Closed\`). Only a real withdrawal (the dialer\'s \`cancel\` or abort, or its leaving) reads \`Closed\` ("withdrawn" above).',
    '',
    'Before the fix in client/session.ts, a dialer that gave up sent a bye carrying \`Timeout\` but the answering side reported any bye before the open as \`Closed\` (2 of 5 dials of this round in the first run of this scenario); it now keeps the peer\'s \`Timeout\` or \`NoPath\`.',
    '',
    'Why it holds: every deadline of a dial derives from the one budget the dialer set. `dial.timeoutMs` travels to the service and on as `request.timeoutMs`, so the answering side keeps to what is left of it; the session deadline on both sides is that budget, not a fixed 15 s; and a dialer that gives up sends a bye carrying `Timeout`, which the answering side reports as `Timeout`. A starved endpoint fires its timers late but nothing in the dial depends on a timer firing on time: ICE checks are retransmitted (RFC 8445 §14.3), the DTLS handshake retransmits its flights (RFC 6347 §4.2.4), and the room buffers signals until the slower side reads them.',
  ].join('\n');
}

const haveCgroup = labAvailable() && cpuCgroupAvailable();
if (labAvailable() && !haveCgroup) process.stdout.write(CGROUP_SKIP_LINE + '\n');

describe.skipIf(!haveCgroup)('NAT lab: dialing under CPU starvation', () => {
  let lab: Lab;
  let tls: LabTls;
  let stack: HomelinkStack;
  let homes: Home[] = [];
  let dialer: LabProcess;
  let answerer: LabProcess;
  let group: CpuGroup | undefined;
  let dEvents: ReturnType<typeof events>;
  let aEvents: ReturnType<typeof events>;
  let dialNo = 0;

  beforeAll(async () => {
    removeStaleCpuGroups();
    lab = await Lab.create();
    tls = makeLabTls(lab.runId);
    stack = await startHomelinkStack(lab, tls);
    homes = [await lab.addHome('port-restricted'), await lab.addHome('port-restricted')];
    const tag = randomBytes(3).toString('hex');
    const ids = { dialer: `cd-${tag}`, answerer: `ca-${tag}` };
    const cfg = (role: 'dialer' | 'answerer', hostAddress: string): StarvePeerConfig => ({
      role,
      id: ids[role],
      peer: role === 'dialer' ? ids.answerer : ids.dialer,
      home: `home-${tag}`,
      signalingUrl: stack.signalingUrl,
      issuerDir: stack.issuerDir,
      caFile: tls.cert,
      hostAddress,
    });
    answerer = lab.spawn(homes[1]!.hosts[0]!.ns, process.execPath, tsxArgs('test/natlab/peer-starve.ts', JSON.stringify(cfg('answerer', homes[1]!.hosts[0]!.address))));
    dialer = lab.spawn(homes[0]!.hosts[0]!.ns, process.execPath, tsxArgs('test/natlab/peer-starve.ts', JSON.stringify(cfg('dialer', homes[0]!.hosts[0]!.address))));
    dEvents = events(dialer);
    aEvents = events(answerer);
    await Promise.all([waitForLine(answerer, /^ready$/, 60_000, 'answering endpoint'), waitForLine(dialer, /^ready$/, 60_000, 'dialing endpoint')]);
    // `ip netns exec` execs the command, so the child's pid is the endpoint's own node process.
    group = CpuGroup.create(lab.runId);
    group.add(dialer.child.pid!);
    group.add(answerer.child.pid!);
  });

  afterAll(async () => {
    group?.unlimit();
    await Promise.all([dialer?.stop(), answerer?.stop()]);
    if (dialer && answerer) dumpOnFailure('starvation', { dialer, answerer }, rounds.some((r) => r.dials.some((d) => !d.ok)));
    group?.remove();
    for (const h of homes) await lab?.removeHome(h);
    await stack?.stop().catch(() => undefined);
    const runId = lab?.runId;
    await lab?.destroy();
    if (runId) expect(Lab.existingNamespaces(runId), 'namespaces left behind').toEqual([]);
    tls?.dispose();
    if (rounds.length > 0) {
      mkdirSync('test-output', { recursive: true });
      writeFileSync('test-output/starvation.json', JSON.stringify(rounds, null, 2) + '\n');
    }
  });

  /** Runs one round of dials and records it; returns it for the assertions. */
  async function round(name: string, cpus: number | null, budgetMs: number | null): Promise<Round> {
    if (cpus === null) group!.unlimit();
    else group!.limit(cpus, PERIOD_US);
    const before = group!.throttling();
    const dials: DialEvent[] = [];
    const answers: Round['answers'] = [];
    try {
      for (let i = 0; i < DIALS; i++) {
        const n = ++dialNo;
        dialer.child.stdin!.write(budgetMs === null ? `dial ${n}\n` : `dial ${n} ${budgetMs}\n`);
        const d = await dEvents.wait((e) => e.event === 'dial' && e.n === n, DIAL_WAIT_MS, `dial ${n}`);
        dials.push(d);
        // The answering side reads requests in order, so this dial's is its n-th; starved, it may
        // read it only after the dialer gave up.
        const requests = (): DialEvent[] => aEvents.list.filter((e) => e.event === 'request');
        const req = await aEvents.wait(() => requests().length >= n, SETTLE_MS, `request of dial ${n}`).then(
          () => requests()[n - 1],
          () => undefined,
        );
        const sid = req?.sessionId;
        const end = sid
          ? await aEvents
              .wait((e) => e.sessionId === sid && (e.event === 'link-closed' || e.event === 'accept-failed'), SETTLE_MS, `answering side of dial ${n}`)
              .catch(() => undefined)
          : undefined;
        const of = (ev: string): DialEvent | undefined => (sid ? aEvents.list.find((e) => e.sessionId === sid && e.event === ev) : undefined);
        answers.push({ accepted: of('accepted'), failed: of('accept-failed'), closed: end?.event === 'link-closed' ? end : undefined });
        process.stdout.write(`starvation ${name} dial ${n}: ${d.ok ? `open in ${d.openMs} ms (${d.path})` : `${d.code} after ${d.failMs} ms`}; answerer ${answers.at(-1)!.accepted ? 'open' : answers.at(-1)!.failed?.code ?? 'nothing'}\n`);
      }
    } finally {
      group!.unlimit();
    }
    const after = group!.throttling();
    const r: Round = {
      name,
      cpus,
      budgetMs,
      dials,
      answers,
      throttling: cpus === null ? null : { nrThrottled: after.nrThrottled - before.nrThrottled, nrPeriods: after.nrPeriods - before.nrPeriods, throttledMs: after.throttledMs - before.throttledMs },
      load: loadText(),
    };
    rounds.push(r);
    return r;
  }

  it(`every dial opens, unstarved and with the endpoints held to ${STARVED_CPUS} CPU`, async () => {
    const free = await round('unstarved', null, null);
    const starved = await round('starved', STARVED_CPUS, null);
    for (const r of [free, starved]) {
      expect(r.dials.map((d) => (d.ok ? 'open' : d.code)), `${r.name}: dial outcomes`).toEqual(Array(DIALS).fill('open'));
      // Both ends were open: the answering side accepted each one, and its link ended with the dialer's close.
      expect(r.answers.map((a) => (a.accepted ? 'open' : a.failed?.code ?? 'nothing')), `${r.name}: answering side`).toEqual(Array(DIALS).fill('open'));
    }
    // The quota really bit: the group was parked in some of its periods.
    expect(starved.throttling!.nrThrottled, 'periods throttled while starved').toBeGreaterThan(0);
    openRoundsPassed = true;
  });

  it(`with a budget the starved pair cannot meet, both sides end in Timeout (never one side open)`, async () => {
    const r = await round('budget exceeded', SHORT_BUDGET_CPUS, SHORT_BUDGET_MS);
    expect(r.dials.map((d) => (d.ok ? 'open' : d.code)), 'dialer').toEqual(Array(DIALS).fill('Timeout'));
    // The answering side either never got a link (Timeout) or, if its side opened just before the
    // dialer gave up, saw that link closed by the dialer's bye: never left open.
    const outcome = (a: Round['answers'][number]): string =>
      a.accepted ? (a.closed ? 'opened, closed by the dialer' : 'left open') : a.failed ? (withdrawn(a.failed) ? 'withdrawn before a session' : (a.failed.code ?? 'no code')) : 'no request';
    for (const [i, a] of r.answers.entries()) expect(outcome(a), `answering side of dial ${i + 1}`).toMatch(/^(Timeout|withdrawn before a session|no request|opened, closed by the dialer)$/);
    if (openRoundsPassed) writeSection('docs/NATLAB.md', 'starvation', section());
  });
});
