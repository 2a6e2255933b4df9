/**
 * Signaling benchmark (run by hand, not by `npm test`):
 *
 *   npx tsx bench/signaling/run.ts [--n 10,100,500] [--rounds 1] [--count 20] [--peerjs]
 *                                  [--before <commit>] [--batched] [--early] [--deflate] [--library-only]
 *                                  [--profile] [--phases]
 *
 * For each N, N endpoint pairs concurrently complete a whole exchange through the real Worker in
 * local workerd (Miniflare, test/support/signaling.ts): dial, request, accept, both `session`s,
 * both room joins, offer, answer and 10 trickled candidates plus end-of-candidates each way.
 * Latency is per pair, from `dial` sent to the last signal received by either side.
 *
 * A warm-up of 10 exchanges runs first and is not reported.
 *
 * Baseline, same run and same workerd: one presence-socket round trip per endpoint (a frame the
 * presence object answers with an error), N pairs at once. The ratio exchange/baseline says how
 * many round trips' worth an exchange costs, which transfers across machines better than ms.
 *
 * Billable units (`--count K`, default 20 exchanges, on a separate service with the worker's
 * `DEBUG_TRACE_EVENTS` meters on, so the logging does not touch the timed runs): Worker requests,
 * Durable Object requests (upgrades, RPC calls, alarms), incoming WebSocket messages, storage rows
 * read and written, alarms moved, per exchange including its teardown (bye, room deletion, the
 * session records' expiry). Priced per million connection setups with the list prices in
 * docs/BENCHMARKS.md.
 *
 * Before/after (`--before <commit>`): that commit's worker/ and protocol/ are bundled and run
 * against this tree's, alternating the order each round, each run on a fresh service. Its clients
 * are those of this tree's last variant (with `--early`, the library's exchange).
 *
 * The library's exchange alone (`--library-only`, with `--batched --early`): only that variant of
 * this tree (and `--before`'s).
 *
 * The service runs with a deployment's timings (offline wait, request timeout), so a request's
 * deadlines fall where they do in production (before 2026-12-07 the bench used a 60 s request
 * timeout, the same as the socket's staleness, which hid two presence alarm moves per exchange).
 *
 * Batched (`--batched`): a further variant of this tree whose clients declare signal batches
 * (`?caps=batch`) and send the same signals as the client library batches them: the initiator
 * its offer with the first candidate, then the other candidates and their end in one frame; the
 * responder its candidates and their end in two frames, and its answer alone (it answers after
 * its candidates went out). 5 room frames per exchange instead of 25.
 *
 * Early join (`--early`, with `--batched`): a further variant whose clients also declare early
 * join (`?caps=early`, protocol/messages.ts CAP_EARLY_JOIN), as the library does: the dialer's
 * `session` comes before the answer and the target's half in the `request`, and each side holds
 * its signals until the other is in the room (`peer_joined`), as the library's outbox does.
 *
 * Compression (`--deflate`, with `--early`): a further variant whose clients offer permessage-deflate
 * on every socket, as `ws` does by default and browsers always do. The other variants offer none,
 * as the library's Node socket (client/node-websocket.ts) since 2026-12-07; before that they
 * offered it too, so earlier runs' figures include the compression.
 *
 * Where the CPU goes (`--profile`): after each timed pass, a second pass of N exchanges with V8's
 * sampling profiler on every workerd isolate (bench/signaling/profile.ts): the Worker isolate's
 * CPU (what Cloudflare bills) apart from Miniflare's proxy and the runtime's I/O, and the hottest
 * functions. That pass covers each connection setup's whole life on the service: the exchange,
 * `bye`, both room sockets closed, and the room deleted one grace later or, for a ticketed room
 * ended with both sides told, at its deadline (the profiled services' sessions last 5 s for that,
 * so the timed pass's exchanges run with them too). workerd's CPU per thread
 * is read from /proc in both passes. `HOMELINK_PROFILE_DUMP=<dir>` keeps the raw profiles.
 *
 * PeerJS (`--peerjs`): the `peer` package's server in its own process on loopback
 * (bench/signaling/peerjs-server.mjs), the same N pairs doing the same offer, answer and
 * candidates exchange through it (it has no request/accept, rooms or authentication), with its
 * CPU per exchange read from /proc like workerd's.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { presenceQuery, roomQuery, wsProtocols } from '../../protocol/messages.js';
import { DEFAULT_OFFLINE_WAIT_MS, DEFAULT_REQUEST_TIMEOUT_MS } from '../../worker/config.js';
import { bundleWorkerAtCommit, Meters, METER_UNITS, startSignaling, type SignalingHandle } from '../../test/support/signaling.js';
import { childCpuMs, profileIsolates, threadDelta, workerdThreadsMs, type IsolateCpu } from './profile.js';

/** Candidates each side trickles, as the issue asks. */
const CANDIDATES = 10;
/** Every wait is bounded; an exchange that takes longer than this is a failure, not a data point. */
const EXCHANGE_TIMEOUT_MS = 60_000;

type Frame = { type: string } & Record<string, unknown>;

/** A lean client: frames are dispatched to waiters by type, with no per-frame scanning. */
class Sock {
  private readonly queues = new Map<string, Frame[]>();
  private readonly waiters = new Map<string, Array<(f: Frame) => void>>();
  constructor(readonly ws: WebSocket) {
    ws.on('message', (d) => {
      const f = JSON.parse(d.toString()) as Frame;
      const w = this.waiters.get(f.type);
      const first = w?.shift();
      if (first) return first(f);
      let q = this.queues.get(f.type);
      if (!q) this.queues.set(f.type, (q = []));
      q.push(f);
    });
  }
  /** `deflate`: offer permessage-deflate, as `ws` does by default and browsers always do (the library does not). */
  static open(url: string, token: string, deflate = false): Promise<Sock> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, wsProtocols(token), { perMessageDeflate: deflate });
      const s = new Sock(ws);
      ws.once('open', () => resolve(s));
      ws.once('error', reject);
      ws.once('unexpected-response', (_q, r) => reject(new Error(`upgrade refused: ${r.statusCode}`)));
    });
  }
  next(type: string): Promise<Frame> {
    const q = this.queues.get(type);
    const f = q?.shift();
    if (f) return Promise.resolve(f);
    return new Promise((resolve) => {
      let w = this.waiters.get(type);
      if (!w) this.waiters.set(type, (w = []));
      w.push(resolve);
    });
  }
  send(v: unknown): void {
    this.ws.send(JSON.stringify(v));
  }
  close(): void {
    this.ws.terminate();
  }
}

const withTimeout = <T>(p: Promise<T>, what: string): Promise<T> =>
  new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} timed out`)), EXCHANGE_TIMEOUT_MS);
    p.then(
      (v) => (clearTimeout(t), resolve(v)),
      (e: unknown) => (clearTimeout(t), reject(e)),
    );
  });

interface Pair {
  /** The pair sends signals in batches (`--batched`). */
  batched: boolean;
  /** The pair joins rooms early (`--early`). */
  early: boolean;
  /** The pair's sockets offer permessage-deflate (`--deflate`). */
  deflate: boolean;
  app: string;
  hub: string;
  appToken: string;
  hubToken: string;
  appSock: Sock;
  hubSock: Sock;
}

async function makePairs(sig: SignalingHandle, n: number, tag: string, batched = false, early = false, deflate = false): Promise<Pair[]> {
  const ws = sig.url.replace(/^http/, 'ws');
  const pairs: Pair[] = [];
  // Connect in slices so the setup itself does not flood the machine.
  for (let i = 0; i < n; i += 50) {
    const slice = await Promise.all(
      Array.from({ length: Math.min(50, n - i) }, async (_, k) => {
        const j = i + k;
        const app = `bench-${tag}-app-${j}`;
        const hub = `bench-${tag}-hub-${j}`;
        const home = `home-${tag}-${j}`;
        const appToken = await sig.issuer.accessToken({ sub: app, homes: [home] });
        const hubToken = await sig.issuer.accessToken({ sub: hub, homes: [home] });
        // Both declare what the client library declares (a service that does not know a capability ignores it).
        const presenceUrl = `${ws}/v1/presence${presenceQuery({ deliveryAck: false, roomTicket: true, signalBatch: batched, earlyJoin: early })}`;
        const [appSock, hubSock] = await Promise.all([Sock.open(presenceUrl, appToken, deflate), Sock.open(presenceUrl, hubToken, deflate)]);
        await Promise.all([appSock.next('hello'), hubSock.next('hello')]);
        return { batched, early, deflate, app, hub, appToken, hubToken, appSock, hubSock };
      }),
    );
    pairs.push(...slice);
  }
  return pairs;
}

const candidate = (i: number): { type: 'signal'; data: { kind: 'candidate'; candidate: string; sdpMid: string; sdpMLineIndex: number } } => ({
  type: 'signal',
  data: { kind: 'candidate', candidate: `candidate:${i} 1 udp 2122260223 198.51.100.${i + 1} ${50000 + i} typ host`, sdpMid: '0', sdpMLineIndex: 0 },
});

const SDP = 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n'.repeat(4);

/** Milliseconds from the dial to each phase's end, per exchange (for --phases). */
const PHASES = ['request', 'sessions', 'joined', 'done'] as const;
type Marks = Partial<Record<(typeof PHASES)[number], number>>;

/**
 * One whole exchange; returns its latency in ms and closes the room sockets. With `bye`, the
 * initiator ends the room afterwards (as a link that closes does) and both wait for `closed`.
 */
async function exchange(sig: SignalingHandle, p: Pair, reqId: string, marks: Marks = {}, bye = false): Promise<number> {
  const ws = sig.url.replace(/^http/, 'ws');
  const t0 = performance.now();
  p.appSock.send({ type: 'dial', reqId, to: p.hub });
  const req = await p.hubSock.next('request');
  marks.request = performance.now() - t0;
  p.hubSock.send({ type: 'answer', reqId: req.reqId, accept: true });
  // Early join: the dialer's session comes before the answer, the target's half with the request.
  const early = p.early ? (req.early as { ticket: string; batch?: boolean } | undefined) : undefined;
  if (p.early && early === undefined) throw new Error('the service did not join early');
  const [sa, sb] = await Promise.all([p.appSock.next('session'), early ? { sessionId: req.sessionId, ticket: early.ticket, batch: early.batch } : p.hubSock.next('session')]);
  marks.sessions = performance.now() - t0;
  const side = async (token: string, sessionId: string, ticket: string | undefined, initiator: boolean): Promise<Sock> => {
    const r = await Sock.open(`${ws}/v1/rooms/${sessionId}${roomQuery(ticket)}`, token, p.deflate);
    const joined = await r.next('joined');
    // As the library's outbox: nothing leaves while the peer is not in the room.
    if (p.early && joined.peerPresent !== true) await r.next('peer_joined');
    marks.joined = Math.max(marks.joined ?? 0, performance.now() - t0);
    const offer = { kind: 'offer', sdp: SDP };
    const eoc = { kind: 'candidate', candidate: '' };
    const cands = Array.from({ length: CANDIDATES }, (_, i) => candidate(i).data);
    if (!p.batched || sa.batch !== true) {
      if (initiator) r.send({ type: 'signal', data: offer });
      for (const c of cands) r.send({ type: 'signal', data: c });
      r.send({ type: 'signal', data: eoc });
    } else {
      // As the library's outbox sends them (client/link.ts `SignalOutbox`).
      const first = initiator ? [offer, cands[0]!] : [cands[0]!];
      r.send({ type: 'signal', data: { kind: 'batch', items: first } });
      r.send({ type: 'signal', data: { kind: 'batch', items: [...cands.slice(1), eoc] } });
    }
    // offer or answer, then the peer's candidates and end-of-candidates
    let got = 0;
    for (;;) {
      const f = await r.next('signal');
      const data = f.data as { kind: string; items?: Array<{ kind: string }> };
      const items = data.kind === 'batch' ? data.items! : [data];
      if (!initiator && items.some((d) => d.kind === 'offer')) r.send({ type: 'signal', data: { kind: 'answer', sdp: SDP } });
      got += items.length;
      if (got === CANDIDATES + 2) break;
    }
    return r;
  };
  const rooms = await Promise.all([
    side(p.appToken, sa.sessionId as string, sa.ticket as string | undefined, true),
    side(p.hubToken, sb.sessionId as string, sb.ticket as string | undefined, false),
  ]);
  const ms = performance.now() - t0;
  marks.done = ms;
  if (bye) {
    rooms[0].send({ type: 'signal', data: { kind: 'bye' } });
    await Promise.all(rooms.map((r) => r.next('closed')));
  }
  for (const r of rooms) r.close();
  return ms;
}

async function baseline(pairs: Pair[]): Promise<number[]> {
  return Promise.all(
    pairs.flatMap((p) =>
      [p.appSock, p.hubSock].map(async (s) => {
        const t0 = performance.now();
        s.send({ type: 'ping' });
        await s.next('error');
        return performance.now() - t0;
      }),
    ),
  );
}

/**
 * CPU time (ms) used so far by the workerd processes this script started, from /proc. CPU per
 * exchange hardly depends on what else the shared machine runs, unlike wall-clock latency.
 */
function workerdCpuMs(): number {
  return childCpuMs('workerd');
}

const pct = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
};

/** Session lifetime in the counting pass: short, so the session records' expiry is counted too. */
const COUNT_SESSION_TTL_S = 2;
/**
 * Room grace in the counting pass: short, so the room's deletion is counted too, yet longer than
 * an exchange (as the 15 s default is in a deployment), so the alarm writes counted are those of
 * an exchange that ends within the grace.
 */
const COUNT_ROOM_GRACE_MS = 1500;
/** After the grace, time for the rooms' alarms to run before a profile stops. */
const TEARDOWN_MARGIN_MS = 1500;
/**
 * Session TTL of the profiled services: the deadline (answer + TTL) of every exchange falls within
 * `TEARDOWN_MS` of its end, and is far past any exchange's length at the N the docs use (100).
 */
const PROFILE_SESSION_TTL_S = 5;
/** What the profiled pass waits after its exchanges: the rooms' grace or deadline, and a margin. */
const TEARDOWN_MS = Math.max(COUNT_ROOM_GRACE_MS, PROFILE_SESSION_TTL_S * 1000) + TEARDOWN_MARGIN_MS;

/** Billable units per exchange, by `<object>.<unit>`, over `k` exchanges (10 at a time). */
async function countUnits(k: number, v: Variant): Promise<Record<string, number>> {
  const meters = new Meters();
  const sig = await startSignaling({
    ...(v.bundle !== undefined ? { bundle: v.bundle } : {}),
    offlineWaitMs: DEFAULT_OFFLINE_WAIT_MS,
    requestTimeoutMs: DEFAULT_REQUEST_TIMEOUT_MS,
    sessionTtlSeconds: COUNT_SESSION_TTL_S,
    roomGraceMs: COUNT_ROOM_GRACE_MS,
    vars: { DEBUG_TRACE_EVENTS: '1' },
    onOutput: meters.onOutput,
  });
  try {
    const pairs = await makePairs(sig, k, 'count', v.batched, v.early, v.deflate);
    // Presence sockets are per endpoint, not per exchange: count from here.
    await new Promise((r) => setTimeout(r, 500));
    meters.reset();
    for (let i = 0; i < k; i += 10) {
      await withTimeout(Promise.all(pairs.slice(i, i + 10).map((p, j) => exchange(sig, p, `c${i + j}`, {}, true))), 'count pass');
    }
    // Teardown: rooms deleted after the grace, session records expire at the deadline.
    await new Promise((r) => setTimeout(r, COUNT_SESSION_TTL_S * 1000 + COUNT_ROOM_GRACE_MS + 2000));
    for (const p of pairs) {
      p.appSock.close();
      p.hubSock.close();
    }
  } finally {
    await sig.close();
  }
  const per: Record<string, number> = {};
  for (const [key, v] of Object.entries(meters.counts)) per[key] = v / k;
  return per;
}

/**
 * List prices (USD) used for the cost per million connection setups; docs/BENCHMARKS.md cites
 * each one. Durable Object duration is priced on the objects' CPU time as a lower bound of their
 * active wall-clock time, at the 128 MB every object is billed for.
 */
const PRICE = {
  workerRequestPerM: 0.3,
  workerCpuMsPerM: 0.02,
  doRequestPerM: 0.15,
  /** Incoming WebSocket messages are billed as requests at 20:1. */
  wsMessagesPerRequest: 20,
  doGbSecondPerM: 12.5,
  doMemoryGb: 0.128,
  rowsWrittenPerM: 1.0,
  rowsReadPerM: 0.001,
} as const;

/**
 * `cpuMsPerExchange`: workerd's whole-process CPU (an upper bound of what is billed);
 * `isolateMsPerExchange`: the Worker isolate's busy time from the profiled pass, when there was one
 * (what Cloudflare bills as CPU; priced instead of the upper bound, which is shown alongside).
 */
function printUnits(per: Record<string, number>, cpuMsPerExchange: number, isolateMsPerExchange: number | null): void {
  const get = (k: string): number => per[k] ?? 0;
  const workerReq = get('worker.request');
  const doReq = get('presence.request') + get('room.request');
  const msgs = get('presence.message') + get('room.message');
  const written = get('presence.write') + get('room.write');
  const read = get('presence.read') + get('room.read');
  const alarms = get('presence.alarm_set') + get('room.alarm_set');
  console.log('\n| unit per exchange | presence | room | worker | total |');
  console.log('|---|---:|---:|---:|---:|');
  for (const [label, unit] of METER_UNITS) {
    const p = get(`presence.${unit}`);
    const r = get(`room.${unit}`);
    const w = get(`worker.${unit}`);
    console.log(`| ${label} | ${p.toFixed(2)} | ${r.toFixed(2)} | ${w.toFixed(2)} | ${(p + r + w).toFixed(2)} |`);
  }
  const cpu = isolateMsPerExchange ?? cpuMsPerExchange;
  const cpuLabel = isolateMsPerExchange !== null ? 'isolate CPU' : 'all workerd CPU, upper bound';
  const costs = {
    'Worker requests': workerReq * PRICE.workerRequestPerM,
    [`Worker CPU (${cpuLabel})`]: cpu * PRICE.workerCpuMsPerM,
    'DO requests incl. messages at 20:1': (doReq + msgs / PRICE.wsMessagesPerRequest) * PRICE.doRequestPerM,
    [`DO duration (${cpuLabel} x 128 MB, lower bound)`]: (cpu / 1000) * PRICE.doMemoryGb * PRICE.doGbSecondPerM,
    // "Each setAlarm() is billed as a single row written" (Durable Objects pricing; workerd meters
    // it as one storage write unit). Runs before 2026-12-07 (evening) priced rows only.
    'storage rows written, alarms set included': (written + alarms) * PRICE.rowsWrittenPerM,
    'storage rows read': read * PRICE.rowsReadPerM,
  };
  console.log(`\n| cost per million connection setups (USD) | |\n|---|---:|`);
  let total = 0;
  for (const [k, v] of Object.entries(costs)) {
    total += v;
    console.log(`| ${k} | ${v.toFixed(3)} |`);
  }
  console.log(`| **total** | **${total.toFixed(3)}** |`);
  const upper = total - cpu * PRICE.workerCpuMsPerM - (cpu / 1000) * PRICE.doMemoryGb * PRICE.doGbSecondPerM + cpuMsPerExchange * PRICE.workerCpuMsPerM + (cpuMsPerExchange / 1000) * PRICE.doMemoryGb * PRICE.doGbSecondPerM;
  console.log(
    `\n(alarms set or moved per exchange: ${alarms.toFixed(2)}; CPU per exchange priced: ${cpu.toFixed(2)} ms (${cpuLabel}); with all workerd CPU instead (${cpuMsPerExchange.toFixed(2)} ms): ${upper.toFixed(3)})`,
  );
}

/** PeerJS's server in its own process; resolves with its port and pid. */
async function startPeerjs(): Promise<{ port: number; pid: number; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [new URL('./peerjs-server.mjs', import.meta.url).pathname], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('PeerJS server did not start')), 20_000);
    child.stdout!.on('data', (d: Buffer) => {
      const m = /port (\d+)/.exec(d.toString());
      if (m) {
        clearTimeout(t);
        resolve(Number(m[1]));
      }
    });
    child.once('exit', () => reject(new Error('PeerJS server exited')));
  });
  return {
    port,
    pid: child.pid!,
    async stop() {
      const exited = new Promise((r) => child.once('exit', r));
      child.stdin!.end();
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

/** N PeerJS pairs at once: OFFER, ANSWER, 10 candidates plus end-of-candidates each way. */
async function peerjsRound(port: number, pid: number, n: number, tag: string): Promise<{ lat: number[]; cpuMs: number; wall: number }> {
  const url = (id: string): string => `ws://127.0.0.1:${port}/peerjs?key=peerjs&id=${id}&token=t${id}`;
  const open = (id: string): Promise<Sock> =>
    new Promise((resolve, reject) => {
      const ws = new WebSocket(url(id));
      const s = new Sock(ws);
      ws.once('error', reject);
      void s.next('OPEN').then(() => resolve(s));
    });
  const pairs: Array<{ a: string; b: string; sa: Sock; sb: Sock }> = [];
  for (let i = 0; i < n; i += 50) {
    pairs.push(
      ...(await Promise.all(
        Array.from({ length: Math.min(50, n - i) }, async (_, k) => {
          const a = `pj-${tag}-a-${i + k}`;
          const b = `pj-${tag}-b-${i + k}`;
          const [sa, sb] = await Promise.all([open(a), open(b)]);
          return { a, b, sa, sb };
        }),
      )),
    );
  }
  const side = async (me: Sock, peer: string, initiator: boolean): Promise<void> => {
    if (initiator) me.send({ type: 'OFFER', dst: peer, payload: { sdp: { type: 'offer', sdp: SDP } } });
    const cand = (i: number): unknown => ({ type: 'CANDIDATE', dst: peer, payload: { candidate: candidate(i).data } });
    if (!initiator) {
      await me.next('OFFER');
      me.send({ type: 'ANSWER', dst: peer, payload: { sdp: { type: 'answer', sdp: SDP } } });
    }
    for (let i = 0; i < CANDIDATES; i++) me.send(cand(i));
    me.send({ type: 'CANDIDATE', dst: peer, payload: { candidate: { candidate: '' } } });
    if (initiator) await me.next('ANSWER');
    for (let i = 0; i < CANDIDATES + 1; i++) await me.next('CANDIDATE');
  };
  const cpu0 = childCpuMs('node', pid);
  const t0 = performance.now();
  const lat = await withTimeout(
    Promise.all(
      pairs.map(async (p) => {
        const s = performance.now();
        await Promise.all([side(p.sa, p.b, true), side(p.sb, p.a, false)]);
        return performance.now() - s;
      }),
    ),
    `PeerJS N=${n}`,
  );
  const wall = (performance.now() - t0) / 1000;
  const cpuMs = (childCpuMs('node', pid) - cpu0) / n;
  for (const p of pairs) {
    p.sa.close();
    p.sb.close();
  }
  return { lat, cpuMs, wall };
}

/** One tree's worker: this checkout, or an earlier commit's (`--before`). */
interface Variant {
  readonly label: string;
  readonly bundle?: string;
  /** Clients send signal batches (`--batched`). */
  readonly batched?: boolean;
  /** Clients join rooms early (`--early`). */
  readonly early?: boolean;
  /** Clients offer permessage-deflate (`--deflate`). */
  readonly deflate?: boolean;
}


interface RunFigures {
  readonly row: string;
  readonly phases: string;
  readonly processCpu: number;
  readonly threads: Array<{ thread: string; ms: number }>;
  readonly isolates: IsolateCpu[] | null;
  /** workerd's CPU per exchange over the profiled pass, by thread. */
  readonly profiledThreads: Array<{ thread: string; ms: number }>;
}

/**
 * One timed pass of N exchanges on a fresh service running `v`, after a warm-up; with `profile`,
 * then a second pass of N with V8's profiler on every isolate (reported apart: the profiler slows
 * the sampled thread).
 */
async function runVariant(v: Variant, n: number, tag: string, profile: boolean): Promise<RunFigures> {
  const sig = await startSignaling({
    // A deployment's timings: the request's deadlines fall where they do in production.
    offlineWaitMs: DEFAULT_OFFLINE_WAIT_MS,
    requestTimeoutMs: DEFAULT_REQUEST_TIMEOUT_MS,
    ...(v.bundle !== undefined ? { bundle: v.bundle } : {}),
    inspector: profile,
    // The profiled pass waits for the rooms' deletion (see below); the timed pass ends before it.
    // A ticketed room ended with `bye` is deleted by its deadline's alarm (worker/room.ts
    // `setAlarm`): with --profile, sessions are short so that falls inside the profiled pass.
    roomGraceMs: COUNT_ROOM_GRACE_MS,
    ...(profile ? { sessionTtlSeconds: PROFILE_SESSION_TTL_S } : {}),
  });
  try {
    // Warm-up (not reported): JIT, the bundle's first isolate, the first objects.
    const warm = await makePairs(sig, 10, `${tag}-warmup`, v.batched, v.early, v.deflate);
    await withTimeout(Promise.all(warm.map((p, i) => exchange(sig, p, `w${i}`))), 'warm-up');
    for (const p of warm) {
      p.appSock.close();
      p.hubSock.close();
    }
    const pairs = await makePairs(sig, n, tag, v.batched, v.early, v.deflate);
    const base = await baseline(pairs);
    const cpu0 = workerdCpuMs();
    const threads0 = workerdThreadsMs();
    const client0 = process.cpuUsage();
    const t0 = performance.now();
    const marks: Marks[] = pairs.map(() => ({}));
    const lat = await withTimeout(Promise.all(pairs.map((p, i) => exchange(sig, p, `r${i}`, marks[i]))), `N=${n}`);
    const wall = (performance.now() - t0) / 1000;
    const serverCpu = (workerdCpuMs() - cpu0) / n;
    const threads = threadDelta(threads0, workerdThreadsMs(), n);
    const c = process.cpuUsage(client0);
    const clientCpu = (c.user + c.system) / 1000 / n;
    const p50 = pct(lat, 0.5);
    const p99 = pct(lat, 0.99);
    const b50 = pct(base, 0.5);
    const b99 = pct(base, 0.99);
    const row = `| ${v.label} | ${n} | ${p50.toFixed(1)} | ${p99.toFixed(1)} | ${(n / wall).toFixed(0)} | ${b50.toFixed(1)} / ${b99.toFixed(1)} | ${(p50 / b50).toFixed(1)} | ${(p99 / b99).toFixed(1)} | ${serverCpu.toFixed(2)} | ${clientCpu.toFixed(1)} |`;
    const at = (k: (typeof PHASES)[number], q: number): string => pct(marks.map((m) => m[k] ?? 0), q).toFixed(0);
    const phases = `|   phases (ms since dial, p50/p99): ${PHASES.map((k) => `${k} ${at(k, 0.5)}/${at(k, 0.99)}`).join(', ')} |`;
    let isolates: IsolateCpu[] | null = null;
    let profiledThreads: Array<{ thread: string; ms: number }> = [];
    if (profile) {
      // The timed pass's rooms are deleted one grace after its sockets closed, or at their
      // deadline: not in this profile.
      await new Promise((r) => setTimeout(r, TEARDOWN_MS));
      const again = await makePairs(sig, n, `${tag}-prof`, v.batched, v.early, v.deflate);
      const th0 = workerdThreadsMs();
      // The whole life of a connection setup: the exchange, `bye`, both room sockets closed and
      // the room's deletion, one grace later or at its deadline (the timed pass stops at the last signal).
      isolates = await profileIsolates(await sig.inspectorUrl(), async () => {
        await withTimeout(Promise.all(again.map((p, i) => exchange(sig, p, `q${i}`, {}, true))), `profiled N=${n}`);
        await new Promise((r) => setTimeout(r, TEARDOWN_MS));
      });
      profiledThreads = threadDelta(th0, workerdThreadsMs(), n);
      for (const p of again) {
        p.appSock.close();
        p.hubSock.close();
      }
    }
    for (const p of pairs) {
      p.appSock.close();
      p.hubSock.close();
    }
    return { row, phases, processCpu: serverCpu, threads, isolates, profiledThreads };
  } finally {
    await sig.close();
  }
}

function printIsolates(label: string, n: number, isolates: IsolateCpu[], threads: Array<{ thread: string; ms: number }>, top: number): void {
  const per = (ms: number): string => (ms / n).toFixed(3);
  console.log(`\n${label}, N = ${n}, profiled pass: per exchange (ms), isolate busy (JS + GC + native work on the isolate's thread)`);
  console.log(`workerd threads during this pass: ${threads.filter((t) => t.ms >= 0.01).map((t) => `${t.thread} ${t.ms.toFixed(2)}`).join(', ')}`);
  console.log('| isolate | busy (sample time) | busy (samples x period) | of which GC | of which (program) |');
  console.log('|---|---:|---:|---:|---:|');
  for (const i of [...isolates].sort((a, b) => b.busyMs - a.busyMs)) console.log(`| ${i.isolate} | ${per(i.busyMs)} | ${per(i.sampledMs)} | ${per(i.gcMs)} | ${per(i.programMs)} |`);
  const user = isolates.find((i) => i.isolate.startsWith('core:user'));
  if (!user) return;
  const whole = threads.reduce((a, t) => a + t.ms, 0);
  console.log(
    `\n${label}, N = ${n}: Worker isolate ${per(user.sampledMs)} ms of ${whole.toFixed(2)} ms whole-process CPU per exchange in the profiled pass; the rest (${(whole - user.sampledMs / n).toFixed(2)} ms) is Miniflare's proxy isolate, the runtime's I/O and V8's background threads`,
  );
  console.log(`\n${label}: hottest functions of the Worker's isolate (self ms per exchange)`);
  for (const f of user.top.slice(0, top)) console.log(`  ${per(f.ms)}  ${f.fn}`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      n: { type: 'string', default: '10,100,500' },
      rounds: { type: 'string', default: '1' },
      phases: { type: 'boolean', default: false },
      count: { type: 'string', default: '20' },
      peerjs: { type: 'boolean', default: false },
      before: { type: 'string' },
      profile: { type: 'boolean', default: false },
      top: { type: 'string', default: '25' },
      batched: { type: 'boolean', default: false },
      early: { type: 'boolean', default: false },
      deflate: { type: 'boolean', default: false },
      'library-only': { type: 'boolean', default: false },
    },
  });
  const countK = Number(values.count);
  if (!Number.isInteger(countK) || countK < 0 || countK > 500) throw new Error('--count takes 0..500 (0: skip the counting pass)');
  const ns = values.n.split(',').map((x) => Number(x));
  const rounds = Number(values.rounds);
  if (ns.some((x) => !Number.isInteger(x) || x < 1 || x > 2000) || !Number.isInteger(rounds) || rounds < 1 || rounds > 10) {
    throw new Error('--n takes integers 1..2000, --rounds 1..10');
  }
  const variants: Variant[] = [{ label: 'this tree' }];
  if (values.batched) variants.push({ label: 'this tree, batched', batched: true });
  if (values.early) {
    if (!values.batched) throw new Error('--early goes with --batched (the library declares both)');
    variants.push({ label: 'this tree, batched, early join', batched: true, early: true });
  }
  if (values.deflate) {
    if (!values.early) throw new Error('--deflate goes with --batched --early (the library\'s exchange, with compression offered)');
    variants.push({ label: 'this tree, batched, early join, deflate offered', batched: true, early: true, deflate: true });
  }
  if (values['library-only']) {
    if (!values.early) throw new Error('--library-only goes with --batched --early');
    variants.splice(0, variants.length, variants.find((v) => v.early === true && v.deflate !== true)!);
  }
  if (values.before !== undefined) {
    if (!/^[\w./-]{1,100}$/.test(values.before)) throw new Error('--before takes a commit or branch name');
    // The same clients as this tree's last variant (a tree that does not know a capability ignores it).
    const { label: _label, ...clients } = variants[variants.length - 1]!;
    variants.unshift({ label: `before (${values.before})`, ...clients, bundle: await bundleWorkerAtCommit(values.before) });
  }
  const cpuPerExchange: number[] = [];
  const results: Array<{ v: Variant; n: number; f: RunFigures }> = [];
  console.log(`load at start: ${loadavg()}`);
  console.log(
    '| tree | N pairs | p50 exchange (ms) | p99 exchange (ms) | exchanges/s | baseline RTT p50 / p99 (ms) | p50 ratio | p99 ratio | workerd CPU / exchange (ms, whole process) | client CPU / exchange (ms) |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const n of ns) {
    for (let round = 0; round < rounds; round++) {
      // Alternate the order, so drift in the machine's load falls on both trees alike.
      const order = round % 2 === 0 ? variants : [...variants].reverse();
      for (const v of order) {
        const f = await runVariant(v, n, `${n}-${round}-${variants.indexOf(v)}`, values.profile);
        console.log(f.row);
        if (values.phases) console.log(f.phases);
        if (v === variants[variants.length - 1]) cpuPerExchange.push(f.processCpu);
        results.push({ v, n, f });
      }
    }
  }
  console.log(`load after timed runs: ${loadavg()}`);
  console.log('\nworkerd CPU per exchange by thread (ms; median over rounds; threads named by workerd, #tid)');
  for (const { v, n, f } of results) {
    console.log(`  ${v.label} N=${n}: ${f.threads.filter((t) => t.ms >= 0.01).map((t) => `${t.thread} ${t.ms.toFixed(2)}`).join(', ')}`);
  }
  if (values.profile) {
    for (const { v, n, f } of results) if (f.isolates) printIsolates(v.label, n, f.isolates, f.profiledThreads, Number(values.top));
  }
  if (values.peerjs) {
    const pj = await startPeerjs();
    try {
      // Warm-up, not reported.
      await peerjsRound(pj.port, pj.pid, 10, 'warm');
      console.log('\nPeerJS server (`peer` 1.0.2, own process), same exchange without request/accept:\n');
      console.log('| N pairs | p50 exchange (ms) | p99 exchange (ms) | exchanges/s | PeerJS server CPU / exchange (ms) |');
      console.log('|---:|---:|---:|---:|---:|');
      for (const n of ns) {
        for (let round = 0; round < rounds; round++) {
          const r = await peerjsRound(pj.port, pj.pid, n, `${n}-${round}`);
          console.log(`| ${n} | ${pct(r.lat, 0.5).toFixed(1)} | ${pct(r.lat, 0.99).toFixed(1)} | ${(n / r.wall).toFixed(0)} | ${r.cpuMs.toFixed(2)} |`);
        }
      }
    } finally {
      await pj.stop();
    }
  }
  if (countK > 0) {
    for (const v of variants) {
      const per = await countUnits(countK, v);
      console.log(`\nBillable units, ${v.label}:`);
      // CPU per exchange for pricing: this tree's median over the timed runs above.
      const cpus = results.filter((r) => r.v === v).map((r) => r.f.processCpu);
      const isoCpus = results.filter((r) => r.v === v && r.f.isolates).map((r) => r.f.isolates!.find((i) => i.isolate.startsWith('core:user'))!.sampledMs / r.n);
      printUnits(per, cpus.length > 0 ? pct(cpus, 0.5) : 0, isoCpus.length > 0 ? pct(isoCpus, 0.5) : null);
    }
  }
  console.log(`\nload at end: ${loadavg()}`);
}

const loadavg = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
