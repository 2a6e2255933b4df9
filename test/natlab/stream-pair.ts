/**
 * Runs two stream endpoints (peer-stream.ts) in lab hosts and collects what they report: the
 * events each prints as they happen (open, path, interrupted, resumed, progress) and their
 * results. Shared by the path scenarios (roaming.test.ts, upgrade.test.ts).
 */
import { randomBytes } from 'node:crypto';
import type { Host, Lab, LabProcess } from './lab.js';
import type { StreamPeerConfig } from './peer-stream.js';
import type { HomelinkStack } from './stack-homelink.js';
import { dumpOnFailure, onLines, tsxArgs, waitForLine } from './support.js';

/** Bound on an endpoint connecting to presence (tsx start-up on a busy machine included). */
const READY_TIMEOUT_MS = 30_000;

export interface StreamEvent {
  readonly t: number;
  readonly event: 'open' | 'path' | 'interrupted' | 'resumed' | 'progress' | 'close';
  readonly kind?: 'direct' | 'relay';
  readonly local?: string;
  readonly remote?: string;
  readonly bytes?: number;
  readonly reason?: string;
}

export interface StreamResult {
  readonly ok: boolean;
  readonly error?: string;
  readonly chunks?: number;
  readonly bytes?: number;
  readonly sha256?: string;
  /** Receiver: longest time between two chunks, and when it began. */
  readonly longestGapMs?: number;
  readonly gapAt?: number;
  readonly restarts?: number;
  /** Moves from a relayed connection onto a direct probe connection (node-datachannel links). */
  readonly probeSwitches?: number;
  readonly path?: { kind: string; local: string; remote: string } | null;
}

export interface StreamSide {
  readonly proc: LabProcess;
  readonly events: StreamEvent[];
  /** Resolves with the first event matching `pred` (already seen or future), or rejects after `timeoutMs`. */
  waitEvent(pred: (e: StreamEvent) => boolean, timeoutMs: number, what: string): Promise<StreamEvent>;
  readonly result: Promise<StreamResult>;
}

export interface StreamPair {
  readonly dialer: StreamSide;
  readonly answerer: StreamSide;
  /** Writes a line to the dialer's stdin (`go`, `stop`). */
  tell(line: string): void;
  stop(): Promise<void>;
}

function side(proc: LabProcess, deadlineMs: number): StreamSide {
  const events: StreamEvent[] = [];
  const waiters: Array<{ pred: (e: StreamEvent) => boolean; resolve: (e: StreamEvent) => void }> = [];
  let settle!: (r: StreamResult) => void;
  const result = new Promise<StreamResult>((r) => (settle = r));
  const t = setTimeout(() => settle({ ok: false, error: `no result within ${deadlineMs} ms` }), deadlineMs);
  void result.then(() => clearTimeout(t));
  void proc.exited.then((code) => settle({ ok: false, error: `exited (${code}) without a result: ${proc.stderr().slice(-800)}` }));
  onLines(proc, (line) => {
    if (line.startsWith('R ')) {
      try {
        settle(JSON.parse(line.slice(2)) as StreamResult);
      } catch {
        settle({ ok: false, error: 'unparsable result line' });
      }
    } else if (line.startsWith('E ')) {
      try {
        const e = JSON.parse(line.slice(2)) as StreamEvent;
        events.push(e);
        for (const w of [...waiters]) {
          if (w.pred(e)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(e);
          }
        }
      } catch {
        // a torn line: ignored, the result line decides
      }
    }
  });
  return {
    proc,
    events,
    result,
    waitEvent(pred, timeoutMs, what) {
      const seen = events.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const w = { pred, resolve: (e: StreamEvent) => (clearTimeout(timer), resolve(e)) };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`${what}: not within ${timeoutMs} ms; events: ${JSON.stringify(events.slice(-10))}; stderr: ${proc.stderr().slice(-1500)}`));
        }, timeoutMs);
        waiters.push(w);
      });
    },
  };
}

/** Starts both endpoints, waits until both are online, and has the dialer dial. */
export async function startStreamPair(
  lab: Lab,
  stack: HomelinkStack,
  caFile: string,
  hosts: { dialer: Host; answerer: Host },
  opts: Pick<StreamPeerConfig, 'mode' | 'bytes' | 'paceMs' | 'deadlineMs' | 'backend'> & { pinDialer: boolean; pinAnswerer?: boolean; directRetryMs?: number },
): Promise<StreamPair> {
  const tag = randomBytes(3).toString('hex');
  const ids = { dialer: `sd-${tag}`, answerer: `sa-${tag}` };
  const cfg = (role: 'dialer' | 'answerer', host: Host, pin: boolean): StreamPeerConfig => ({
    role,
    id: ids[role],
    peer: role === 'dialer' ? ids.answerer : ids.dialer,
    home: `home-${tag}`,
    signalingUrl: stack.signalingUrl,
    issuerDir: stack.issuerDir,
    caFile,
    hostAddress: pin ? host.address : null,
    mode: opts.mode,
    bytes: opts.bytes,
    paceMs: opts.paceMs,
    deadlineMs: opts.deadlineMs,
    ...(opts.directRetryMs !== undefined ? { directRetryMs: opts.directRetryMs } : {}),
    ...(opts.backend ? { backend: opts.backend } : {}),
  });
  // NATLAB_WERIFT_DEBUG=<debug pattern> turns on werift's own logs (developer aid, with NATLAB_DEBUG).
  const env: Record<string, string> = process.env['NATLAB_WERIFT_DEBUG'] ? { DEBUG: process.env['NATLAB_WERIFT_DEBUG'] } : {};
  const a = lab.spawn(hosts.answerer.ns, process.execPath, tsxArgs('test/natlab/peer-stream.ts', JSON.stringify(cfg('answerer', hosts.answerer, opts.pinAnswerer ?? true))), env);
  const d = lab.spawn(hosts.dialer.ns, process.execPath, tsxArgs('test/natlab/peer-stream.ts', JSON.stringify(cfg('dialer', hosts.dialer, opts.pinDialer))), env);
  const pair: StreamPair = {
    dialer: side(d, opts.deadlineMs + READY_TIMEOUT_MS),
    answerer: side(a, opts.deadlineMs + READY_TIMEOUT_MS),
    tell: (line) => void d.child.stdin?.write(line + '\n'),
    stop: async () => {
      await Promise.all([d.stop(), a.stop()]);
      dumpOnFailure(`stream-${tag}`, { dialer: d, answerer: a }, true);
    },
  };
  try {
    await Promise.all([
      waitForLine(a, /^ready$/, READY_TIMEOUT_MS, 'answering endpoint'),
      waitForLine(d, /^ready$/, READY_TIMEOUT_MS, 'dialing endpoint'),
    ]);
  } catch (e) {
    await pair.stop();
    throw e;
  }
  pair.tell('go');
  return pair;
}
