/**
 * An endpoint process of the product for the matrix: the client library (`client/`,
 * `Endpoint.connect` / `dial` / `accept` / `link.channel` / `link.path`) against the signaling
 * worker and our relay in `pub`. Runs inside a host namespace:
 *
 *   node --import tsx test/natlab/peer-homelink.ts '<json config>'
 *
 * The answering side connects, prints `ready`, accepts the request and receives the transfer.
 * The dialing side connects, prints `ready`, waits for a `go` line on stdin (the harness sends
 * it once both are present), then measures from `dial()` to the open, identity-verified link
 * and sends the transfer. Each prints one `R <json>` result and idles until stopped.
 */
import { createInterface } from 'node:readline';
import { appendFileSync, readFileSync } from 'node:fs';
import { createDevIssuer } from '../../dev/issuer.js';
import { Endpoint, generateDeviceKey, nodeBackend, type BackendName, type Channel, type Link } from '../../client/index.js';
import type { PeerBackend, PeerOptions } from '../../client/webrtc/backend.js';
import { createNodeDatachannelBackend, type NodeDatachannelOptions } from '../../client/webrtc/node-datachannel.js';
import { nativeDebugLog } from './support.js';
import { receiveTransfer, sendTransfer, type CandidateKind, type Pipe, type PeerResult } from './transfer.js';

export interface HomelinkPeerConfig {
  readonly role: 'dialer' | 'answerer';
  readonly id: string;
  readonly peer: string;
  readonly home: string;
  readonly signalingUrl: string;
  readonly issuerDir: string;
  /** PEM of the lab CA that signed the relay's TLS certificate. */
  readonly caFile: string;
  /** This host's only address: host candidates are gathered there and nowhere else. */
  readonly hostAddress: string;
  readonly bytes: number;
  readonly marker: string;
  readonly deadlineMs: number;
  /** The WebRTC stack (werift when absent), chosen as the library chooses it (`nodeBackend`). */
  readonly backend?: BackendName;
  /**
   * node-datachannel only: options of that backend (bench/connect/natlab-native.ts compares
   * `orderReflexiveChecks` off and on). Given, links go straight to node-datachannel, without
   * the werift fallback: for the UDP cells only.
   */
  readonly nativeOptions?: NodeDatachannelOptions;
}

/** dial() gives up this much before the process deadline, so its typed error is what gets reported. */
const DIAL_MARGIN_MS = 5_000;

const cfg = JSON.parse(process.argv[2] ?? '{}') as HomelinkPeerConfig;
const out = (line: string): void => void process.stdout.write(line + '\n');

let finished = false;
function finish(r: PeerResult): void {
  if (finished) return;
  finished = true;
  out(`R ${JSON.stringify(r)}`);
}
/** The link once open: the deadline's message says whether it opened, and debug dumps its state. */
let opened: Link | null = null;
let lastChannel: Channel | null = null;
const deadline = setTimeout(() => {
  const link = opened;
  if (!link) return finish({ ok: false, error: `no verified link within ${cfg.deadlineMs} ms` });
  if (debug) {
    const control = (link as unknown as { control: { state: string } | null }).control;
    const raw = (lastChannel as unknown as { raw?: { st?: string; dc?: { isOpen(): boolean; bufferedAmount(): number } } } | null)?.raw;
    const native = raw?.dc ? `, channel raw ${raw.st} isOpen ${raw.dc.isOpen()} buffered ${raw.dc.bufferedAmount()}` : '';
    void link.stats().then((st) => debug(`deadline: link ${link.isOpen ? 'open' : 'closed'}, control channel ${control?.state ?? 'none'}${native}, stats ${JSON.stringify(st)}`));
  }
  setTimeout(() => finish({ ok: false, error: `link open but the transfer not finished within ${cfg.deadlineMs} ms` }), debug ? 200 : 0);
}, cfg.deadlineMs);
deadline.unref();

/** With NATLAB_DEBUG set, session phases and link events go to stderr with a timestamp (kept for failed cells). */
const debug = process.env['NATLAB_DEBUG'] ? (what: string): void => void process.stderr.write(`T ${Date.now()} ${what}\n`) : undefined;

/** Wraps a client Channel (promise-based backpressure) as the transfer's Pipe. */
function channelPipe(ch: Channel): Pipe {
  if (!debug) return { send: (d) => ch.send(d), onMessage: (cb) => void ch.on('message', cb) };
  // Debug: what moved on the channel, so a cell that opened but never finished shows where it stopped.
  const n = { sent: 0, sentBytes: 0, recv: 0, recvBytes: 0 };
  const every = 16;
  lastChannel = ch;
  debug(`channel ${ch.label} state ${ch.state}`);
  if (process.env['NATLAB_STATES']) appendFileSync(process.env['NATLAB_STATES'], `${cfg.role} ${cfg.id} ${ch.label} ${ch.state}\n`);
  ch.on('close', () => debug(`channel ${ch.label} closed`));
  return {
    send: async (d) => {
      n.sent++;
      n.sentBytes += typeof d === 'string' ? d.length : d.byteLength;
      if (n.sent % every === 0 || typeof d === 'string') debug(`sent ${n.sent} (${n.sentBytes} B) buffered ${ch.bufferedAmount}${typeof d === 'string' ? ` text ${d.slice(0, 12)}` : ''}`);
      await ch.send(d);
    },
    onMessage: (cb) =>
      void ch.on('message', (d) => {
        n.recv++;
        n.recvBytes += typeof d === 'string' ? d.length : d.byteLength;
        if (n.recv % every === 0 || typeof d === 'string') debug(`received ${n.recv} (${n.recvBytes} B)${typeof d === 'string' ? ` text ${d.slice(0, 12)}` : ''}`);
        cb(d);
      }),
  };
}

if (cfg.backend === 'node-datachannel') await nativeDebugLog(`${cfg.id}.${cfg.role}`);

// The real backend (werift or node-datachannel), kept so the selected pair's candidate types can
// be read after the link opened (link.path has addresses and transport; the matrix also records
// candidate types).
const chosen = await nodeBackend(cfg.backend ?? 'werift');
const nativeOptions = cfg.backend === 'node-datachannel' ? cfg.nativeOptions : undefined;
const backends: PeerBackend[] = [];
const backend = async (opts: PeerOptions): Promise<PeerBackend> => {
  const b = nativeOptions ? await createNodeDatachannelBackend(opts, nativeOptions) : await chosen.factory(opts);
  backends.push(b);
  return b;
};

async function describePath(link: Link): Promise<PeerResult['path']> {
  const p = link.path;
  if (!p) return undefined;
  let local: CandidateKind = 'unknown';
  let remote: CandidateKind = 'unknown';
  for (const b of [...backends].reverse()) {
    const pair = await b.selectedPair().catch(() => null);
    if (pair) {
      local = pair.local.type;
      remote = pair.remote.type;
      break;
    }
  }
  return { kind: p.kind, local, remote, protocol: p.protocol, localAddress: p.local, remoteAddress: p.remote };
}

/** ICE restarts the link needed (and whether its path changed) while the cell ran. */
async function restarts(link: Link): Promise<{ restarts: number }> {
  const st = await link.stats().catch(() => null);
  return { restarts: st?.restarts ?? 0 };
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
    backend,
    ...(debug ? { trace: (phase: string) => debug(phase) } : {}),
  });
  if (cfg.role === 'answerer') {
    const t0 = performance.now();
    ep.on('request', (req) => {
      if (req.peer !== cfg.peer) return req.reject('unexpected peer');
      req.accept().then(
        (link) => {
          const openMs = performance.now() - t0;
          const path = describePath(link);
          opened = link;
          debug?.('accepted');
          link.on('channel', (ch) => {
            void receiveTransfer(channelPipe(ch)).then(async (r) => finish({ ...r, openMs, path: await path, ...(await restarts(link)) }));
          });
        },
        (e: unknown) => finish({ ok: false, error: `accept failed: ${String(e)}` }),
      );
    });
    out('ready');
    return;
  }
  out('ready');
  await new Promise<void>((resolve) => {
    createInterface({ input: process.stdin }).on('line', (l) => l.trim() === 'go' && resolve());
  });
  const t0 = performance.now();
  const link = await ep.dial(cfg.peer, { timeoutMs: cfg.deadlineMs - DIAL_MARGIN_MS });
  const openMs = performance.now() - t0;
  // The path as it was when the link opened: the one the matrix is about.
  const path = await describePath(link);
  opened = link;
  debug?.('opening channel');
  const ch = await link.channel('natlab');
  const t1 = performance.now();
  const r = await sendTransfer(channelPipe(ch), cfg.bytes, cfg.marker);
  finish({ ...r, openMs, transferMs: performance.now() - t1, path, ...(await restarts(link)) });
}

main().catch((e: unknown) => {
  const code = (e as { code?: string }).code;
  finish({ ok: false, error: `${code ?? 'error'}: ${e instanceof Error ? e.message : String(e)}` });
});
