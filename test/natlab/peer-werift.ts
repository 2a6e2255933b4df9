/**
 * A bare werift peer for the matrix harness, used as the reference stack (and as the
 * harness's own proof) independently of the client library: offer, answer and candidates
 * travel as JSON lines through the test process (stdout -> harness -> the other peer's
 * stdin), a data channel carries a checked transfer.
 *
 * Run inside a host namespace: `node --import tsx test/natlab/peer-werift.ts '<json config>'`.
 * Each side sends its description only once gathering is complete (werift's
 * setLocalDescription waits for it): werift gives up on a pair after about 1.5 s and never
 * retries, so a side that started checks long before its peer (which may spend 5 s waiting
 * for an unreachable STUN server behind the UDP-blocking firewall) would fail for good. The
 * product's client library is expected to handle this itself; this reference must not flake.
 *
 * Lines out: `S <signal json>`, then one `R <result json>` (see transfer.ts); the process then
 * idles until the harness stops it.
 */
import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import { RTCPeerConnection, type RTCDataChannel, type RTCIceCandidate } from 'werift';
import { candidateType, receiveTransfer, sendTransfer, weriftPipe, type PeerResult } from './transfer.js';

export interface WeriftPeerConfig {
  readonly role: 'offerer' | 'answerer';
  readonly iceServers: { urls: string; username?: string; credential?: string }[];
  /** PEM file of the lab CA, for TURN over TLS. */
  readonly caFile?: string;
  readonly bytes: number;
  readonly marker: string;
  /** Bound on the whole run, after which the peer reports failure and exits. */
  readonly deadlineMs: number;
}

type Signal =
  | { kind: 'offer' | 'answer'; sdp: string }
  | { kind: 'candidate'; candidate: ReturnType<RTCIceCandidate['toJSON']> | null };

const cfg = JSON.parse(process.argv[2] ?? '{}') as WeriftPeerConfig;
const t0 = performance.now();
const out = (prefix: 'S' | 'R', v: unknown): void => void process.stdout.write(`${prefix} ${JSON.stringify(v)}\n`);

let finished = false;
/** Reports once; the harness stops this process after both sides reported, so nothing in flight is cut off. */
function finish(r: PeerResult): void {
  if (finished) return;
  finished = true;
  out('R', r);
}

const deadline = setTimeout(() => finish({ ok: false, error: `no verified link within ${cfg.deadlineMs} ms` }), cfg.deadlineMs);
deadline.unref();

const relayTransport = ((): string | undefined => {
  const turn = cfg.iceServers.find((s) => s.urls.startsWith('turn'));
  if (!turn) return undefined;
  if (turn.urls.startsWith('turns:')) return 'tls';
  return turn.urls.includes('transport=tcp') ? 'tcp' : 'udp';
})();

const pc = new RTCPeerConnection({
  iceServers: cfg.iceServers,
  iceUseIpv6: false,
  ...(cfg.caFile ? { turnTlsOptions: { ca: readFileSync(cfg.caFile) } } : {}),
});

pc.onicecandidate = ({ candidate }) => out('S', { kind: 'candidate', candidate: candidate ? candidate.toJSON() : null });

const pending: Signal[] = [];
let remoteSet = false;

async function onSignal(s: Signal): Promise<void> {
  if (s.kind === 'candidate') {
    // Trickled candidates may arrive before the description they belong to.
    if (!remoteSet) return void pending.push(s);
    if (s.candidate) await pc.addIceCandidate(s.candidate);
    return;
  }
  await pc.setRemoteDescription({ type: s.kind, sdp: s.sdp });
  remoteSet = true;
  if (s.kind === 'offer') {
    await pc.setLocalDescription(await pc.createAnswer());
    out('S', { kind: 'answer', sdp: pc.localDescription!.sdp });
  }
  for (const p of pending.splice(0)) await onSignal(p);
}

createInterface({ input: process.stdin }).on('line', (line) => {
  try {
    void onSignal(JSON.parse(line) as Signal).catch((e: unknown) => finish({ ok: false, error: String(e) }));
  } catch {
    finish({ ok: false, error: 'bad signal line' });
  }
});

function path(): PeerResult['path'] {
  const pair = pc.iceTransports[0]?.getSelectedCandidatePair();
  if (!pair) return undefined;
  const local = candidateType(pair.local.candidate);
  const remote = candidateType(pair.remote.candidate);
  const relayed = local === 'relay' || remote === 'relay';
  const addr = (line: string): string | undefined => {
    const f = line.split(' ');
    return f.length > 5 ? `${f[4]}:${f[5]}` : undefined;
  };
  return {
    kind: relayed ? 'relay' : 'direct',
    local,
    remote,
    protocol: local === 'relay' ? relayTransport ?? 'udp' : 'udp',
    localAddress: addr(pair.local.candidate),
    remoteAddress: addr(pair.remote.candidate),
  };
}

async function onOpen(dc: RTCDataChannel): Promise<void> {
  const openMs = performance.now() - t0;
  const pipe = weriftPipe(dc);
  const transfer = cfg.role === 'offerer' ? await sendTransfer(pipe, cfg.bytes, cfg.marker) : await receiveTransfer(pipe);
  finish({ ...transfer, openMs, path: path() });
}

if (cfg.role === 'offerer') {
  const dc = pc.createDataChannel('natlab', { ordered: true });
  dc.stateChanged.subscribe((st) => {
    if (st === 'open') void onOpen(dc);
  });
  await pc.setLocalDescription(await pc.createOffer());
  out('S', { kind: 'offer', sdp: pc.localDescription!.sdp });
} else {
  pc.onDataChannel.subscribe((dc) => {
    if (dc.readyState === 'open') void onOpen(dc);
    else dc.stateChanged.subscribe((st) => st === 'open' && void onOpen(dc));
  });
}
