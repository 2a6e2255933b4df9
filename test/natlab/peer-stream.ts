/**
 * An endpoint process for the path scenarios (roaming.test.ts, upgrade.test.ts): the client
 * library over a real link, with a sequence-numbered stream whose gaps and digest are measured.
 *
 *   node --import tsx test/natlab/peer-stream.ts '<json config>'
 *
 * Both sides print `ready` once online. The dialer waits for `go` on stdin, dials, prints
 * `E {"event":"open",...}`, then sends: `bytes` in 16 KiB chunks as fast as backpressure allows
 * (mode `bulk`), or one chunk every `paceMs` until `stop` arrives on stdin (mode `paced`). Every
 * chunk starts with its sequence number (8 bytes, big-endian). The receiver checks the numbers
 * run without gap or repeat, hashes everything, and records the longest time between two
 * chunks (the stall). Each side prints `E <json>` lines as things happen (`open`, `path`,
 * `interrupted`, `resumed`, `progress`) and one `R <json>` result at the end; times are
 * `Date.now()` values, comparable across the lab's processes (one machine, one clock).
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { createDevIssuer } from '../../dev/issuer.js';
import { Endpoint, generateDeviceKey, type BackendName, type Channel, type Link } from '../../client/index.js';
import { nativeDebugLog } from './support.js';

export interface StreamPeerConfig {
  readonly role: 'dialer' | 'answerer';
  readonly id: string;
  readonly peer: string;
  readonly home: string;
  readonly signalingUrl: string;
  readonly issuerDir: string;
  readonly caFile: string;
  /** Pin host candidates to this address, or null to let the library discover interfaces (roaming). */
  readonly hostAddress: string | null;
  readonly mode: 'bulk' | 'paced';
  /** Bulk: bytes to send. */
  readonly bytes: number;
  /** Paced: one chunk this often. */
  readonly paceMs: number;
  readonly directRetryMs?: number;
  readonly deadlineMs: number;
  /** The WebRTC stack (the library's automatic choice when absent). */
  readonly backend?: BackendName;
}

/** Chunk size: the matrix's (test/natlab/transfer.ts), well under SCTP message limits. */
const CHUNK_BYTES = 16 * 1024;
/** Progress lines every this many bytes received (the harness triggers network changes on them). */
const PROGRESS_EVERY = 1024 * 1024;

const cfg = JSON.parse(process.argv[2] ?? '{}') as StreamPeerConfig;
const out = (line: string): void => void process.stdout.write(line + '\n');
/** With NATLAB_DEBUG set, session phases and events go to stderr with a timestamp (kept by the harness). */
const debug = process.env['NATLAB_DEBUG'] ? (what: string): void => void process.stderr.write(`T ${Date.now()} ${what}\n`) : undefined;
const event = (e: Record<string, unknown>): void => {
  out(`E ${JSON.stringify({ t: Date.now(), ...e })}`);
  if (debug && e['event'] !== 'progress') debug(`event ${JSON.stringify(e)}`);
};

let finished = false;
function finish(r: Record<string, unknown>): void {
  if (finished) return;
  finished = true;
  out(`R ${JSON.stringify(r)}`);
}
setTimeout(() => finish({ ok: false, error: `not finished within ${cfg.deadlineMs} ms` }), cfg.deadlineMs).unref();

const stdinLines: string[] = [];
const stdinWaiters: Array<() => void> = [];
createInterface({ input: process.stdin }).on('line', (l) => {
  stdinLines.push(l.trim());
  for (const w of stdinWaiters.splice(0)) w();
});
async function waitLine(word: string): Promise<void> {
  while (!stdinLines.includes(word)) await new Promise<void>((r) => stdinWaiters.push(r));
}

function watch(link: Link): void {
  link.on('path', (p) => event({ event: 'path', kind: p.kind, local: p.local, remote: p.remote, protocol: p.protocol }));
  link.on('interrupted', () => event({ event: 'interrupted' }));
  link.on('resumed', () => event({ event: 'resumed' }));
  link.on('close', (reason) => {
    event({ event: 'close', reason });
    finish({ ok: false, error: `link closed: ${reason}` });
  });
}

/** Receives until `END <count> <sha256>`, checking order and measuring gaps. */
function receive(ch: Channel, link: Link): void {
  const hash = createHash('sha256');
  let expected = 0n;
  let bytes = 0;
  let nextProgress = PROGRESS_EVERY;
  let last = 0;
  let longestGap = 0;
  let gapAt = 0;
  let error: string | null = null;
  ch.on('message', (d) => {
    const now = Date.now();
    if (typeof d === 'string') {
      const m = /^END (\d+) ([0-9a-f]{64})$/.exec(d);
      if (!m) return;
      const digest = hash.digest('hex');
      void ch.send(`ACK ${expected} ${digest}`).then(async () => {
        const st = await link.stats().catch(() => null);
        const ok = error === null && BigInt(m[1]!) === expected && m[2] === digest;
        finish({ ok, error: error ?? (ok ? undefined : 'count or digest differs'), chunks: Number(expected), bytes, sha256: digest, longestGapMs: longestGap, gapAt, restarts: st?.restarts ?? 0, probeSwitches: st?.probeSwitches ?? 0, path: link.path });
      });
      return;
    }
    const seq = new DataView(d.buffer, d.byteOffset, d.byteLength).getBigUint64(0);
    if (seq !== expected && error === null) error = `chunk ${seq} arrived when ${expected} was due`;
    expected++;
    hash.update(d);
    bytes += d.byteLength;
    if (last !== 0 && now - last > longestGap) {
      longestGap = now - last;
      gapAt = last;
    }
    last = now;
    if (bytes >= nextProgress) {
      nextProgress += PROGRESS_EVERY;
      event({ event: 'progress', bytes });
    }
  });
}

/** Sends numbered chunks (bulk or paced), then `END`, and checks the receiver's `ACK`. */
async function send(ch: Channel, link: Link): Promise<void> {
  const hash = createHash('sha256');
  const ack = new Promise<string>((resolve) => ch.on('message', (d) => typeof d === 'string' && d.startsWith('ACK ') && resolve(d)));
  let seq = 0n;
  let bytes = 0;
  const sendOne = async (): Promise<void> => {
    const chunk = randomBytes(Math.min(CHUNK_BYTES, cfg.mode === 'bulk' ? cfg.bytes - bytes : CHUNK_BYTES));
    new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength).setBigUint64(0, seq++);
    hash.update(chunk);
    bytes += chunk.byteLength;
    await ch.send(chunk);
  };
  const t0 = Date.now();
  if (cfg.mode === 'bulk') {
    while (bytes < cfg.bytes) await sendOne();
  } else {
    let stop = false;
    void waitLine('stop').then(() => (stop = true));
    while (!stop) {
      await sendOne();
      await new Promise((r) => setTimeout(r, cfg.paceMs));
    }
  }
  const digest = hash.digest('hex');
  await ch.send(`END ${seq} ${digest}`);
  const a = await ack;
  const st = await link.stats().catch(() => null);
  const ok = a === `ACK ${seq} ${digest}`;
  finish({ ok, error: ok ? undefined : `receiver answered ${a}`, chunks: Number(seq), bytes, sha256: digest, sendMs: Date.now() - t0, restarts: st?.restarts ?? 0, probeSwitches: st?.probeSwitches ?? 0, path: link.path });
}

if (cfg.backend === 'node-datachannel') await nativeDebugLog(`${cfg.id}.${cfg.role}`);

async function main(): Promise<void> {
  const issuer = await createDevIssuer({ dir: cfg.issuerDir });
  const key = await generateDeviceKey();
  const ep = await Endpoint.connect({
    signalingUrl: cfg.signalingUrl,
    token: () => issuer.accessToken({ sub: cfg.id, homes: [cfg.home] }),
    identity: { certificate: await issuer.identityCertificate({ sub: cfg.id, publicJwk: key.publicJwk }), privateKey: key.privateKey },
    trust: { issuer: issuer.issuer, jwks: issuer.publicJwks },
    ...(cfg.hostAddress ? { hostAddresses: [cfg.hostAddress] } : {}),
    turnTlsOptions: { ca: readFileSync(cfg.caFile, 'utf8') },
    ...(cfg.directRetryMs !== undefined ? { session: { directRetryMs: cfg.directRetryMs } } : {}),
    ...(cfg.backend ? { webrtcBackend: cfg.backend } : {}),
    ...(debug ? { trace: (phase: string) => debug(phase) } : {}),
  });
  if (cfg.role === 'answerer') {
    ep.on('request', (req) => {
      if (req.peer !== cfg.peer) return req.reject('unexpected peer');
      req.accept().then(
        (link) => {
          watch(link);
          event({ event: 'open', kind: link.path?.kind, local: link.path?.local, remote: link.path?.remote });
          link.on('channel', (ch) => receive(ch, link));
        },
        (e: unknown) => finish({ ok: false, error: `accept failed: ${String(e)}` }),
      );
    });
    out('ready');
    return;
  }
  out('ready');
  await waitLine('go');
  const link = await ep.dial(cfg.peer, { timeoutMs: 30_000 });
  watch(link);
  event({ event: 'open', kind: link.path?.kind, local: link.path?.local, remote: link.path?.remote });
  await send(await link.channel('stream'), link);
}

main().catch((e: unknown) => {
  const code = (e as { code?: string }).code;
  finish({ ok: false, error: `${code ?? 'error'}: ${e instanceof Error ? e.message : String(e)}` });
});
