/**
 * The matrix: which cells exist, what theory expects of each, how one cell is run with a
 * given stack (bare werift + coturn, or the product: client library + our relay + the
 * signaling worker), and how the results become docs/NATLAB.md.
 */
import { randomBytes } from 'node:crypto';
import type { Host, Lab, LabProcess } from './lab.js';
import { directPossible, NAT_BEHAVIOURS, NAT_PROFILES, type NatBehaviour } from './nat.js';
import { onLines } from './support.js';
import type { CellPath, PeerResult } from './transfer.js';
import type { BirthdayReport } from './birthday-run.js';

/** A side of a cell: behind one of the NAT behaviours, or on the public side with no NAT. */
export type Side = NatBehaviour | 'open';
export const SIDES: readonly Side[] = [...NAT_BEHAVIOURS, 'open'];

export interface CellSpec {
  readonly id: string;
  readonly dialer: Side;
  readonly answerer: Side;
  /** Both endpoints are hosts of the same home (behind `dialer`'s NAT). */
  readonly sameLan: boolean;
  readonly expected: 'direct' | 'relay';
}

/** Bytes of the checked transfer per cell: enough for many relayed packets, small enough for 41 cells. */
export const TRANSFER_BYTES = 1024 * 1024;
/** Bound on one cell from peer start to both results (covers 2 x 5 s gathering waits in werift). */
export const CELL_DEADLINE_MS = 45_000;

const sideLabel = (s: Side): string => s;

/** Every ordered pair of sides (dialer, answerer), plus two hosts of one home for each NAT behaviour. */
export function matrixCells(): CellSpec[] {
  const cells: CellSpec[] = [];
  for (const a of SIDES) {
    for (const b of SIDES) {
      const direct = directPossible(a === 'open' ? null : a, b === 'open' ? null : b);
      cells.push({ id: `${a}--${b}`, dialer: a, answerer: b, sameLan: false, expected: direct ? 'direct' : 'relay' });
    }
  }
  for (const b of NAT_BEHAVIOURS) {
    // Two hosts on one LAN reach each other on host candidates, whatever the router does.
    cells.push({ id: `same-lan--${b}`, dialer: b, answerer: b, sameLan: true, expected: 'direct' });
  }
  return cells;
}

export interface CellResult {
  readonly spec: CellSpec;
  /** The hosts' own (LAN or public) addresses. */
  readonly dialerAddress?: string;
  readonly answererAddress?: string;
  readonly marker: string;
  readonly connected: boolean;
  readonly dialer: PeerResult;
  readonly answerer: PeerResult;
  /** The link as a whole: relayed when either side's selected pair uses a relay candidate. */
  readonly kind: 'direct' | 'relay' | 'none';
  readonly transferOk: boolean;
  readonly error?: string;
}

/** What a stack must do to run one cell between two prepared hosts. */
export interface Stack {
  readonly name: string;
  /** Starts the two endpoint processes; the harness wires nothing else. */
  runPair(lab: Lab, dialer: Host, answerer: Host, cell: CellSpec, marker: string): Promise<[PeerResult, PeerResult]>;
}

/** Cells with no link or a broken transfer, and an assertion message naming each with its error (CI logs keep only a tail). */
export function failedCells(results: readonly CellResult[]): { failed: { cell: string; observed: CellResult['kind']; error?: string }[]; message: string } {
  const failed = results
    .filter((r) => r.kind === 'none' || !r.transferOk)
    .map((r) => ({ cell: r.spec.id, observed: r.kind, ...(r.error !== undefined ? { error: r.error } : {}) }));
  return { failed, message: `cells that failed: ${failed.map((c) => `${c.cell} (${c.observed}): ${(c.error ?? 'transfer differs').replace(/\s+/g, ' ').slice(0, 300)}`).join('; ')}` };
}

/** Waits for the `R <json>` result line of a peer process (bounded). */
export function peerResult(proc: LabProcess, timeoutMs: number): Promise<PeerResult> {
  return new Promise((resolve) => {
    let done = false;
    const settle = (r: PeerResult): void => {
      if (done) return;
      done = true;
      clearTimeout(t);
      resolve(r);
    };
    const t = setTimeout(() => settle({ ok: false, error: `no result within ${timeoutMs} ms` }), timeoutMs);
    onLines(proc, (line) => {
      if (!line.startsWith('R ')) return;
      try {
        settle(JSON.parse(line.slice(2)) as PeerResult);
      } catch {
        settle({ ok: false, error: 'unparsable result line' });
      }
    });
    void proc.exited.then((code) => settle({ ok: false, error: `peer exited (${code}) without a result: ${proc.stderr().slice(-600)}` }));
  });
}

function linkKind(d: PeerResult, a: PeerResult): CellResult['kind'] {
  const paths = [d.path, a.path].filter((p): p is CellPath => p !== undefined);
  if (!d.ok || !a.ok || paths.length === 0) return 'none';
  return paths.some((p) => p.kind === 'relay' || p.local === 'relay' || p.remote === 'relay') ? 'relay' : 'direct';
}

/** Builds the hosts of a cell, runs it with `stack`, tears the hosts down. */
export async function runCell(lab: Lab, stack: Stack, spec: CellSpec): Promise<CellResult> {
  const marker = `HLPLAIN-${spec.id}-${randomBytes(4).toString('hex')}`;
  const cleanups: (() => Promise<void>)[] = [];
  try {
    let dialer: Host;
    let answerer: Host;
    if (spec.sameLan) {
      const home = await lab.addHome(spec.dialer as NatBehaviour, 2);
      cleanups.push(() => lab.removeHome(home));
      [dialer, answerer] = [home.hosts[0]!, home.hosts[1]!];
    } else {
      const make = async (side: Side): Promise<Host> => {
        if (side === 'open') {
          const h = await lab.addOpenHost();
          cleanups.push(() => lab.removeOpenHost(h));
          return h;
        }
        const home = await lab.addHome(side);
        cleanups.push(() => lab.removeHome(home));
        return home.hosts[0]!;
      };
      dialer = await make(spec.dialer);
      answerer = await make(spec.answerer);
    }
    const [d, a] = await stack.runPair(lab, dialer, answerer, spec, marker);
    const kind = linkKind(d, a);
    const transferOk = d.ok && a.ok && d.sha256 !== undefined && d.sha256 === a.sha256;
    const errors = [d.error ? `dialer: ${d.error}` : '', a.error ? `answerer: ${a.error}` : ''].filter(Boolean);
    const error = errors.length > 0 ? errors.join('; ') : undefined;
    return {
      spec,
      dialerAddress: dialer.address,
      answererAddress: answerer.address,
      marker,
      connected: kind !== 'none',
      dialer: d,
      answerer: a,
      kind,
      transferOk,
      ...(error !== undefined ? { error } : {}),
    };
  } catch (e) {
    const failed: PeerResult = { ok: false, error: String(e) };
    return { spec, marker, connected: false, dialer: failed, answerer: failed, kind: 'none', transferOk: false, error: String(e) };
  } finally {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  }
}

/** Runs cells with at most `concurrency` at a time (each on its own homes, so independent). */
export async function runCells(lab: Lab, stack: Stack, cells: readonly CellSpec[], concurrency: number): Promise<CellResult[]> {
  const results: CellResult[] = new Array<CellResult>(cells.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < cells.length) {
      const i = next++;
      results[i] = await runCell(lab, stack, cells[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, cells.length) }, worker));
  return results;
}

// ---- Report -----------------------------------------------------------------------------

function pathText(r: CellResult): string {
  const p = r.dialer.path ?? r.answerer.path;
  if (!p || r.kind === 'none') return 'none';
  return `${p.local} ↔ ${p.remote}`;
}

function addressText(r: CellResult): string {
  const p = r.dialer.path;
  if (!p || r.kind === 'none') return '';
  return `${p.localAddress ?? '?'} → ${p.remoteAddress ?? '?'}`;
}

function relayTransports(r: CellResult): string {
  if (r.kind !== 'relay') return '';
  const t = (p: PeerResult): string => (p.path?.local === 'relay' ? p.path.protocol.toUpperCase() : '-');
  return `${t(r.dialer)} / ${t(r.answerer)}`;
}

/** Why a relayed cell is relayed: one reason per kind of cell (the note issue 5 asks for). */
export function relayReason(spec: CellSpec): { key: string; text: string } {
  const blocked = [spec.dialer, spec.answerer].filter((x) => x === 'udp-blocked').length;
  if (blocked === 2) {
    return {
      key: 'both-blocked',
      text: 'both sides sit behind the UDP-blocking firewall: each reaches the relay only over TURN/TLS (or TURN/TCP) on port 443, so the only path runs from one allocation to the other on the relay (relay-to-relay), which needs the relay to accept its own relayed addresses as peers.',
    };
  }
  if (blocked === 1) {
    return {
      key: 'blocked',
      text: 'one side sits behind the UDP-blocking firewall: no UDP path to or from it exists, so it reaches the relay over TURN/TLS (or TURN/TCP) on port 443 and the relay exchanges UDP with the other side, usually straight with that side\'s own host or server-reflexive address (path "host ↔ relay").',
    };
  }
  const pair = [spec.dialer, spec.answerer].sort().join(' + ');
  if (pair === 'symmetric + symmetric') {
    return {
      key: 'sym-sym',
      text: 'both NATs pick a new external port for every destination, so the port each side learned from STUN is never the one it sends its checks from, and each filter admits only the exact address:port its own host sent to: no check can ever pass both NATs.',
    };
  }
  return {
    key: 'sym-pr',
    text: "the symmetric side's checks leave from a fresh port, which the port-restricted filter drops (it admits only the exact address:port its host sent to, the symmetric side's STUN-learned port); the port-restricted side's checks to that fresh port are new destinations for the symmetric NAT, which drops them too.",
  };
}

export interface ReportInput {
  readonly stack: string;
  readonly results: readonly CellResult[];
  readonly durationS: number;
  readonly captureBytes: number;
  readonly controlMarkerFound: boolean;
  readonly markersFound: readonly string[];
  readonly birthday?: BirthdayReport | undefined;
}

function median(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** The whole of docs/NATLAB.md, regenerated by every run of the matrix. */
export function renderReport(r: ReportInput): string {
  const L: string[] = [];
  L.push('# NAT lab: connectivity matrix');
  L.push('');
  L.push('Generated by `test/natlab/matrix.test.ts` (`npm run test:natlab`, as root with `ip` and `nft`); every run rewrites this section (up to the matrix end marker) and asserts the expectations below; edit it in `renderReport`, not here. Sections further down are written by other suites or by hand, and a matrix run keeps them.');
  L.push('');
  const asExpected = r.results.filter((c) => c.kind === c.spec.expected && c.transferOk).length;
  L.push(`Stack: ${r.stack}. Whole matrix: ${r.results.length} cells in ${r.durationS.toFixed(0)} s on this machine; **${asExpected} of ${r.results.length} connected on the path theory predicts** with a checked transfer.`);
  L.push('');
  L.push('## Running');
  L.push('');
  L.push('`npm run test:natlab` (also part of `npm test`) as root with `ip` and `nft`; elsewhere the project prints `skipped: NAT lab needs root and iptables/nft` once and its tests are reported skipped. Knobs for development: `NATLAB_CELLS=<regex>` runs matching cells only and writes `test-output/NATLAB.partial.md` instead of this file; `NATLAB_CONCURRENCY` (default 1) cells at once; `NATLAB_STACK=werift` runs the reference stack (bare werift peers with the SDP carried by the test, Debian coturn as STUN/TURN) instead of the product and reports to `test-output/NATLAB.werift.md`; `NATLAB_DEBUG=<dir>` keeps the endpoint logs of failed cells there.');
  L.push('');
  L.push('## The lab');
  L.push('');
  L.push("Network namespaces with no link to the machine's own: a `pub` namespace (bridge `br0`; the signaling service and the relay on 203.0.113.5, .10 and .20; a black-hole default route), one router namespace per home (`wan0` on the bridge, `lan0` bridge to its hosts, the NAT rule set in nftables) and one namespace per host (`eth0`, 198.18.i.2/24), plus hosts with a public address directly on the bridge. Code: `test/natlab/lab.ts`, rule sets: `test/natlab/nat.ts`.");
  L.push('');
  L.push('| behaviour | mapping (RFC 4787) | filtering (RFC 4787) | rule set |');
  L.push('|---|---|---|---|');
  for (const b of NAT_BEHAVIOURS) {
    const p = NAT_PROFILES[b];
    L.push(`| ${b} | ${p.mapping ?? 'no UDP'} | ${p.filtering ?? 'no UDP'} | ${p.summary} |`);
  }
  L.push('| open | none (public address) | none | no NAT, no firewall |');
  L.push('');
  L.push('Each rule set is measured on every run by an RFC 5780-style probe of our own (`test/natlab/behaviours.test.ts`): mapping compared across the relay\'s two addresses and two ports, filtering by asking for replies from the other address and the other port.');
  L.push('');
  L.push('## Expectations (asserted)');
  L.push('');
  L.push('- Every cell connects and moves a checked transfer (SHA-256 on both sides, 1 MiB).');
  L.push('- Direct whenever theory allows: at least one side keeps its mapping for new destinations (endpoint-independent mapping) and both filters open to the other side\'s packets. Relayed only for symmetric against symmetric, symmetric against port-restricted, and the UDP-blocked firewall.');
  L.push('- The relay carries only ciphertext: a capture of all traffic to and from the relay\'s addresses never contains any cell\'s plaintext marker (which starts every 16 KiB chunk of the transfer), while a control datagram carrying a marker in clear is found in the same capture.');
  L.push('');
  L.push('## Matrix');
  L.push('');
  L.push('Path: candidate types of the selected pair as the dialer sees it (local ↔ remote), then its addresses (LAN hosts are 198.18.i.2/.3, router WANs and open hosts 203.0.113.30+, the relay 203.0.113.10). Relay transport: each side\'s transport to the relay (dialer / answerer; `-` when that side used no relay candidate of its own). Time: from `dial()` to an open, verified link, as the dialer measured it.');
  L.push('');
  L.push('| dialer | answerer | expected | observed | path | addresses (dialer side) | relay transport | dial → open (ms) | transfer | ICE restarts |');
  L.push('|---|---|---|---|---|---|---|---|---|---|');
  for (const c of r.results) {
    const d = c.spec.sameLan ? `${sideLabel(c.spec.dialer)} (same LAN)` : sideLabel(c.spec.dialer);
    const a = c.spec.sameLan ? `${sideLabel(c.spec.answerer)} (same LAN)` : sideLabel(c.spec.answerer);
    const ms = c.dialer.openMs !== undefined ? c.dialer.openMs.toFixed(0) : '-';
    const observed = c.kind === 'none' ? '**failed**' : c.kind === c.spec.expected ? c.kind : `**${c.kind}**`;
    L.push(`| ${d} | ${a} | ${c.spec.expected} | ${observed} | ${pathText(c)} | ${addressText(c)} | ${relayTransports(c)} | ${ms} | ${c.transferOk ? `SHA-256 ok${c.dialer.transferMs !== undefined ? ` (${(c.dialer.transferMs / 1000).toFixed(1)} s)` : ''}` : 'failed'} | ${(c.dialer.restarts ?? 0) + (c.answerer.restarts ?? 0)} |`);
  }
  L.push('');
  const bad = r.results.filter((c) => c.kind === 'none' || !c.transferOk || c.kind !== c.spec.expected);
  if (bad.length > 0) {
    L.push('## Defects in this run');
    L.push('');
    L.push('Every cell is expected to connect on the path theory predicts; these did not:');
    L.push('');
    for (const c of bad) {
      L.push(`- **${c.spec.id}** (expected ${c.spec.expected}, observed ${c.kind}): ${(c.error ?? 'path differs from theory').replace(/\s+/g, ' ').slice(0, 300)}`);
    }
    L.push('');
  }
  L.push('## Why each relayed cell is relayed');
  L.push('');
  const groups = new Map<string, { text: string; cells: string[] }>();
  for (const c of r.results.filter((x) => x.spec.expected === 'relay')) {
    const why = relayReason(c.spec);
    const g = groups.get(why.key) ?? { text: why.text, cells: [] };
    g.cells.push(`${c.spec.dialer} → ${c.spec.answerer}`);
    groups.set(why.key, g);
  }
  for (const g of groups.values()) L.push(`- ${g.cells.map((x) => `**${x}**`).join(', ')}: ${g.text}`);
  L.push('');
  L.push('## Beyond: port prediction for symmetric against port-restricted');
  L.push('');
  if (r.birthday) {
    const b = r.birthday;
    const sent = b.attempts.map((a) => a.guessesSent ?? 0);
    L.push(`Tailscale's "birthday" technique, measured with our own UDP sockets (\`test/natlab/birthday.ts\`): the symmetric side opens ${b.sockets} mappings towards the port-restricted side's external address, which then sends up to ${b.guesses} packets to random ports of the symmetric NAT. Theory: ${(b.expectedShare * 100).toFixed(1)}% of attempts hit.`);
    L.push('');
    L.push(`Measured: **${b.hits} of ${b.attempts.length} attempts opened a direct UDP path** (a packet each way through both NATs); guesses sent per attempt: median ${median(sent)}, at most ${Math.max(0, ...sent)} (plus ${b.sockets} packets from the symmetric side).${b.attempts.some((a) => a.error) ? ` Errors: ${b.attempts.filter((a) => a.error).map((a) => a.error).join('; ')}.` : ''}`);
    L.push('');
    L.push(`Bounded: at most ${b.sockets + b.guesses} packets per attempt, ${b.sockets} sockets held for under 15 s. It is a measurement here, not wired into the client library (werift owns the ICE sockets, so using a hit means handing the punched 5-tuple to ICE as a peer-reflexive candidate); the lab's symmetric NAT draws ports uniformly at random, the case the technique is built for, while NATs that allocate sequentially would need a different guess pattern.`);
  } else {
    L.push('Not run in this pass.');
  }
  L.push('');
  L.push('## Relay capture');
  L.push('');
  L.push(`${r.captureBytes} bytes captured on the relay's addresses; control marker ${r.controlMarkerFound ? 'found' : 'NOT found'}; cell markers found: ${r.markersFound.length === 0 ? 'none' : r.markersFound.join(', ')}.`);
  L.push('');
  return L.join('\n');
}
