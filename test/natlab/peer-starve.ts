/**
 * An endpoint process for the starvation scenario (starvation.test.ts): the client library,
 * dialing (or accepting) again and again while the harness changes how much CPU it may use.
 *
 *   node --import tsx test/natlab/peer-starve.ts '<json config>'
 *
 * Both sides print `ready` once online. The answering side accepts every request from its peer
 * and echoes whatever arrives on a link's channels. The dialing side reads commands on stdin:
 * `dial <n> [timeoutMs]` dials once (the library's default deadline without `timeoutMs`), opens a
 * channel, has one message echoed (proof that both ends of the link are open), then closes the
 * link and waits until it is released. Each side prints `E <json>` lines as things happen; times
 * are `Date.now()` values, comparable across the lab's processes (one machine, one clock).
 *
 *   dialer:   {"event":"dial","n":1,"ok":true,"openMs":412,"echoMs":20,"path":"direct"}
 *             {"event":"dial","n":2,"ok":false,"code":"Timeout","failMs":20003}
 *   answerer: {"event":"request"}, {"event":"accepted","acceptMs":380}, {"event":"accept-failed","code":"Timeout"},
 *             {"event":"link-closed","reason":"..."}
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { createDevIssuer } from '../../dev/issuer.js';
import { Endpoint, generateDeviceKey, LinkError, type Link } from '../../client/index.js';

export interface StarvePeerConfig {
  readonly role: 'dialer' | 'answerer';
  readonly id: string;
  readonly peer: string;
  readonly home: string;
  readonly signalingUrl: string;
  readonly issuerDir: string;
  readonly caFile: string;
  /** This host's only address (host candidates there only). */
  readonly hostAddress: string;
}

/** Bound on the echo over an open link; a starved pair answers in well under a second. */
const ECHO_TIMEOUT_MS = 15_000;

const cfg = JSON.parse(process.argv[2] ?? '{}') as StarvePeerConfig;
const out = (line: string): void => void process.stdout.write(line + '\n');
const event = (e: Record<string, unknown>): void => out(`E ${JSON.stringify({ t: Date.now(), ...e })}`);
const debug = process.env['NATLAB_DEBUG'] ? (what: string): void => void process.stderr.write(`T ${Date.now()} ${what}\n`) : undefined;

function codeOf(e: unknown): string {
  return e instanceof LinkError ? e.code : e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

async function echo(link: Link, n: number): Promise<number> {
  const ch = await link.channel(`ping-${n}`);
  const t0 = Date.now();
  const back = new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no echo within ${ECHO_TIMEOUT_MS} ms`)), ECHO_TIMEOUT_MS);
    ch.on('message', (m) => {
      if (m === `ping ${n}`) {
        clearTimeout(t);
        resolve();
      }
    });
  });
  await ch.send(`ping ${n}`);
  await back;
  return Date.now() - t0;
}

async function dialOnce(ep: Endpoint, n: number, timeoutMs: number | undefined): Promise<void> {
  const t0 = Date.now();
  let link: Link;
  try {
    link = await ep.dial(cfg.peer, timeoutMs !== undefined ? { timeoutMs } : {});
  } catch (e) {
    event({ event: 'dial', n, ok: false, code: codeOf(e), message: e instanceof Error ? e.message : String(e), failMs: Date.now() - t0 });
    return;
  }
  const openMs = Date.now() - t0;
  try {
    const echoMs = await echo(link, n);
    event({ event: 'dial', n, ok: true, openMs, echoMs, path: link.path?.kind ?? null });
  } catch (e) {
    event({ event: 'dial', n, ok: false, code: `opened, then: ${codeOf(e)}`, openMs });
  } finally {
    await link.close();
  }
}

async function main(): Promise<void> {
  const issuer = await createDevIssuer({ dir: cfg.issuerDir });
  const key = await generateDeviceKey();
  const ep = await Endpoint.connect({
    signalingUrl: cfg.signalingUrl,
    token: () => issuer.accessToken({ sub: cfg.id, homes: [cfg.home] }),
    identity: { certificate: await issuer.identityCertificate({ sub: cfg.id, publicJwk: key.publicJwk }), privateKey: key.privateKey },
    trust: { issuer: issuer.issuer, jwks: issuer.publicJwks },
    hostAddresses: [cfg.hostAddress],
    turnTlsOptions: { ca: readFileSync(cfg.caFile, 'utf8') },
    ...(debug ? { trace: (phase: string, detail?: string) => debug(`${phase} ${detail ?? ''}`) } : {}),
  });
  if (cfg.role === 'answerer') {
    ep.on('request', (req) => {
      if (req.peer !== cfg.peer) return req.reject('unexpected peer');
      const t0 = Date.now();
      event({ event: 'request', sessionId: req.sessionId });
      req.accept().then(
        (link) => {
          event({ event: 'accepted', sessionId: req.sessionId, acceptMs: Date.now() - t0 });
          link.on('channel', (ch) => ch.on('message', (m) => void ch.send(m).catch(() => undefined)));
          link.on('close', (reason) => event({ event: 'link-closed', sessionId: req.sessionId, reason }));
        },
        (e: unknown) => event({ event: 'accept-failed', sessionId: req.sessionId, code: codeOf(e), message: e instanceof Error ? e.message : String(e), failMs: Date.now() - t0 }),
      );
    });
    out('ready');
    return;
  }
  out('ready');
  // Commands run one after another, in order.
  let queue = Promise.resolve();
  createInterface({ input: process.stdin }).on('line', (l) => {
    const m = /^dial (\d+)(?: (\d+))?$/.exec(l.trim());
    if (!m) return;
    const n = Number(m[1]);
    const timeoutMs = m[2] !== undefined ? Number(m[2]) : undefined;
    queue = queue.then(() => dialOnce(ep, n, timeoutMs));
  });
}

main().catch((e: unknown) => {
  out(`R ${JSON.stringify({ ok: false, error: codeOf(e) })}`);
  process.exitCode = 1;
});
