/**
 * The two hosts of the "relay TLS slowloris" lab scenario (relay-slowloris.test.ts), run in
 * their own namespaces:
 *
 *   hostile <json>  keeps `concurrency` connections open to the relay at all times, reopening
 *                   each one the relay closes: half to the TLS port sending half a ClientHello
 *                   and then nothing, half to the TCP port dribbling one byte every 500 ms of
 *                   a frame that never completes. Prints `stats {...}` every second. Bounded:
 *                   at most `maxConnections` opened in all, and it exits after `runMs`.
 *   legit <json>    one TURN/TLS allocation (RFC 8656 §7.2, long-term REST credentials),
 *                   after checking that UDP to the relay gets no answer from behind its
 *                   firewall. Prints `udp blocked`, then `allocated <ip>:<port>` or
 *                   `failed <reason>`.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { mintTurnCredential } from '../../protocol/index.js';
import {
  Attr,
  StreamFramer,
  StunClass,
  StunMethod,
  StunWriter,
  TRANSPORT_UDP,
  addLongTermAuth,
  decodeStun,
  encodeRequestedTransport,
  longTermKey,
  readResponse,
} from '../../protocol/stun/index.js';

interface HostileConfig {
  relay: string;
  tlsPort: number;
  tcpPort: number;
  concurrency: number;
  maxConnections: number;
  runMs: number;
}

interface LegitConfig {
  relay: string;
  tlsPort: number;
  udpPort: number;
  secret: string;
  caFile: string;
  deadlineMs: number;
}

/** The first bytes of a TLS ClientHello record announcing 512 bytes, of which these few come. */
const HALF_CLIENT_HELLO = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);
/** A ChannelData header announcing 60,000 bytes (RFC 8656 §12.4), then a byte at a time. */
const DRIBBLE_HEADER = Buffer.from([0x40, 0x00, 0xea, 0x60]);
const DRIBBLE_INTERVAL_MS = 500;
const REOPEN_DELAY_MS = 250;

function hostile(cfg: HostileConfig): void {
  let open = 0;
  let opened = 0;
  /** Closed by the relay within 1 s of connecting: refused at accept. */
  let refusedFast = 0;
  /** Closed by the relay later: a deadline. */
  let closedLater = 0;
  let maxOpen = 0;
  const started = Date.now();
  const one = (kind: 'tls' | 'tcp'): void => {
    if (opened >= cfg.maxConnections || Date.now() - started > cfg.runMs) return;
    opened++;
    const at = Date.now();
    const s = net.connect({ host: cfg.relay, port: kind === 'tls' ? cfg.tlsPort : cfg.tcpPort });
    let timer: NodeJS.Timeout | undefined;
    let counted = false;
    s.on('connect', () => {
      counted = true;
      open++;
      maxOpen = Math.max(maxOpen, open);
      if (kind === 'tls') s.write(HALF_CLIENT_HELLO);
      else {
        s.write(DRIBBLE_HEADER);
        timer = setInterval(() => s.write(Buffer.from([0x55])), DRIBBLE_INTERVAL_MS);
      }
    });
    s.on('error', () => {});
    s.on('close', () => {
      clearInterval(timer);
      if (counted) {
        open--;
        if (Date.now() - at < 1_000) refusedFast++;
        else closedLater++;
      }
      // Reopen, a little later so a refused flood stays bounded (at most concurrency / 250 ms).
      setTimeout(() => one(kind), REOPEN_DELAY_MS);
    });
  };
  for (let i = 0; i < cfg.concurrency; i++) one(i % 2 === 0 ? 'tls' : 'tcp');
  const report = setInterval(() => {
    process.stdout.write(`stats ${JSON.stringify({ open, maxOpen, opened, refusedFast, closedLater })}\n`);
    if (Date.now() - started > cfg.runMs + 2_000) {
      clearInterval(report);
      process.exit(0);
    }
  }, 1_000);
}

const hmacSha1 = (k: Uint8Array, d: Uint8Array): Uint8Array => new Uint8Array(createHmac('sha1', k).update(d).digest());
const md5 = (d: Uint8Array): Uint8Array => new Uint8Array(createHash('md5').update(d).digest());

async function udpAnswers(cfg: LegitConfig): Promise<boolean> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, r));
  const req = new StunWriter(StunMethod.Binding, StunClass.Request, randomBytes(12)).finish();
  try {
    return await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 2_000);
      sock.once('message', () => {
        clearTimeout(t);
        resolve(true);
      });
      for (const delay of [0, 500, 1_000]) setTimeout(() => sock.send(req, cfg.udpPort, cfg.relay), delay);
    });
  } finally {
    sock.close();
  }
}

async function legit(cfg: LegitConfig): Promise<void> {
  if (await udpAnswers(cfg)) {
    process.stdout.write('failed UDP to the relay is not blocked\n');
    return;
  }
  process.stdout.write('udp blocked\n');
  const cred = await mintTurnCredential(cfg.secret, 'legit-endpoint', 600, Date.now() / 1000);
  const s = tls.connect({ host: cfg.relay, port: cfg.tlsPort, ca: readFileSync(cfg.caFile) });
  const framer = new StreamFramer(70_000);
  const frames: Uint8Array[] = [];
  let wake: (() => void) | null = null;
  let closed = false;
  s.on('data', (chunk: Buffer) => {
    framer.push(chunk);
    for (let r = framer.next(); r.ok && r.value; r = framer.next()) frames.push(r.value.bytes.slice());
    wake?.();
  });
  s.on('error', () => {});
  s.on('close', () => {
    closed = true;
    wake?.();
  });
  const next = async (): Promise<Uint8Array> => {
    const deadline = Date.now() + cfg.deadlineMs;
    while (frames.length === 0) {
      if (closed) throw new Error('connection closed by the relay');
      if (Date.now() > deadline) throw new Error('no answer in time');
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 200);
      });
      wake = null;
    }
    return frames.shift()!;
  };
  try {
    await new Promise<void>((resolve, reject) => {
      s.once('secureConnect', () => resolve());
      s.once('close', () => reject(new Error('closed before the TLS handshake finished')));
      setTimeout(() => reject(new Error('TLS handshake not finished in time')), cfg.deadlineMs);
    });
    const allocate = (auth?: Parameters<typeof addLongTermAuth>[1]): Uint8Array => {
      const w = new StunWriter(StunMethod.Allocate, StunClass.Request, randomBytes(12)).add(Attr.RequestedTransport, encodeRequestedTransport(TRANSPORT_UDP));
      return (auth ? addLongTermAuth(w, auth, hmacSha1) : w).finish();
    };
    s.write(allocate());
    const challenge = decodeStun(await next());
    if (!challenge.ok) throw new Error('undecodable answer');
    const c = readResponse(challenge.value);
    if (c.code !== 401 || !c.realm || !c.nonce) throw new Error(`expected 401, got ${c.code}`);
    s.write(allocate({ username: cred.username, realm: c.realm, nonce: c.nonce, key: longTermKey(md5, cred.username, c.realm, cred.credential) }));
    const done = decodeStun(await next());
    if (!done.ok) throw new Error('undecodable answer');
    const r = readResponse(done.value);
    if (r.cls !== StunClass.SuccessResponse || !r.relayed) throw new Error(`Allocate failed: ${r.code}`);
    process.stdout.write(`allocated ${r.relayed.ip}:${r.relayed.port}\n`);
  } catch (e) {
    process.stdout.write(`failed ${(e as Error).message}\n`);
  } finally {
    s.destroy();
  }
}

const [role, json] = process.argv.slice(2);
if (role === 'hostile') hostile(JSON.parse(json!) as HostileConfig);
else if (role === 'legit') void legit(JSON.parse(json!) as LegitConfig).then(() => process.exit(0));
else {
  process.stderr.write('usage: relay-slowloris-peer.ts hostile|legit <json>\n');
  process.exit(2);
}
