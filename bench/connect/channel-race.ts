/**
 * bench/connect/channel-race.ts: back-to-back node-datachannel pairs on loopback (backend only, no
 * signaling), each making an in-band channel the moment the offerer reports `connected` (what the
 * link does when it opens) and sending one message on it. Counts pairs where that message never
 * arrived within 3 s, by what each side saw. Meant to run beside a CPU burner, where libdatachannel
 * 0.24.5's thread hand-offs race (docs/NATLAB.md, "Native backend: a channel opened twice"):
 *
 *   npx tsx bench/connect/channel-race.ts [pairs=200]
 */
import { createNodeDatachannelBackend, loadNodeDatachannel } from '../../client/webrtc/node-datachannel.js';
import type { PeerBackend, RawChannel } from '../../client/webrtc/backend.js';

const N = Number(process.argv[2] ?? 200);
const LOOPBACK = { iceServers: [], hostAddresses: ['127.0.0.1'] } as const;
const WAIT_MS = 3_000;

async function onePair(): Promise<string> {
  const a: PeerBackend = await createNodeDatachannelBackend(LOOPBACK);
  const b: PeerBackend = await createNodeDatachannelBackend(LOOPBACK);
  const seen: string[] = [];
  try {
    a.onCandidate = (c) => void b.addCandidate(c).catch(() => undefined);
    b.onCandidate = (c) => void a.addCandidate(c).catch(() => undefined);
    // The negotiated control channel every link has, made before the offer.
    a.createChannel('homelink-control', { negotiatedId: 1 });
    b.createChannel('homelink-control', { negotiatedId: 1 });
    let made: RawChannel | null = null;
    const outcome = new Promise<string>((resolve) => {
      b.onChannel = (ch) => {
        seen.push(`answerer got it ${ch.state}`);
        ch.onMessage = (m) => resolve(String(m) === 'hi' ? 'ok' : 'garbled');
        ch.onClose = () => resolve('closed at the answerer');
      };
      setTimeout(() => resolve('no message'), WAIT_MS);
    });
    a.onState = (s) => {
      if (s !== 'connected' || made) return;
      const ch = a.createChannel('app');
      made = ch;
      const send = (): void => {
        seen.push('offerer open');
        try {
          ch.send('hi');
        } catch {
          seen.push('send refused');
        }
      };
      // Open already when the peer's acknowledgement came first (loopback).
      if (ch.state === 'open') send();
      else ch.onOpen = send;
      ch.onClose = () => seen.push('closed at the offerer');
    };
    await a.acceptAnswer(await b.acceptOffer(await a.createOffer()));
    const r = await outcome;
    return r === 'ok' ? r : `${r} (${seen.join(', ') || 'nothing seen'})`;
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
}

async function main(): Promise<void> {
  if (!(await loadNodeDatachannel())) throw new Error('node-datachannel not installed');
  const outcomes = new Map<string, number>();
  for (let i = 0; i < N; i++) {
    const r = await onePair();
    outcomes.set(r, (outcomes.get(r) ?? 0) + 1);
  }
  for (const [r, n] of [...outcomes].sort((x, y) => y[1] - x[1])) console.log(`${String(n).padStart(5)}  ${r}`);
  console.log(`${N - (outcomes.get('ok') ?? 0)} of ${N} pairs lost the first message`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
