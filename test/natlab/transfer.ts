/**
 * The checked transfer every matrix cell performs once its link is open, shared by the
 * bare-werift peer and the client-library peer.
 *
 * The dialing side sends `bytes` of random data in chunks, each chunk starting with the
 * cell's plaintext marker (so a capture of the relay would show it if anything were sent in
 * the clear), then a text message `END <sha256 hex> <length>`. The other side hashes what it
 * received and answers `ACK <sha256 hex> <length>`; both sides check the two digests match.
 */
import { createHash, randomBytes } from 'node:crypto';

/** Chunk size: well under SCTP's usual 64 KiB message limit and werift's defaults. */
export const CHUNK_BYTES = 16 * 1024;
/** Pause sending above this many buffered bytes, so a large transfer never buffers it all. */
const HIGH_WATER = 1024 * 1024;

export type CandidateKind = 'host' | 'srflx' | 'prflx' | 'relay' | 'unknown';

export interface CellPath {
  readonly kind: 'direct' | 'relay';
  readonly local: CandidateKind;
  readonly remote: CandidateKind;
  /** Transport to the relay when relayed (udp, tcp, tls); udp for direct paths. */
  readonly protocol: string;
  /** Selected pair's addresses (`address:port`), when known. */
  readonly localAddress?: string | undefined;
  readonly remoteAddress?: string | undefined;
}

export interface PeerResult {
  readonly ok: boolean;
  readonly error?: string;
  /** Time from dial() (or process start for the answering side) to an open link. */
  readonly openMs?: number;
  readonly path?: CellPath | undefined;
  readonly sha256?: string;
  readonly bytes?: number;
  /** Time the checked transfer took (dialing side). */
  readonly transferMs?: number;
  /** ICE restarts the link went through during the cell (client library only). */
  readonly restarts?: number;
}

/** The minimal message pipe the transfer needs; adapters wrap werift or client channels. */
export interface Pipe {
  /** Sends one message; resolves when more may be sent (backpressure). */
  send(data: Uint8Array | string): Promise<void>;
  /** Registers the message handler. */
  onMessage(cb: (data: Uint8Array | string) => void): void;
}

/** The werift data channel shape the adapter relies on. */
export interface WeriftLikeChannel {
  send(data: Buffer | string): void;
  readonly bufferedAmount: number;
  bufferedAmountLowThreshold: number;
  readonly bufferedAmountLow: { subscribe(cb: () => void): { unSubscribe(): void } };
  readonly onMessage: { subscribe(cb: (data: Buffer | string) => void): unknown };
}

/** Wraps a werift RTCDataChannel as a Pipe with bufferedAmount backpressure. */
export function weriftPipe(dc: WeriftLikeChannel): Pipe {
  dc.bufferedAmountLowThreshold = HIGH_WATER / 2;
  return {
    async send(data) {
      dc.send(typeof data === 'string' ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      if (dc.bufferedAmount > HIGH_WATER) {
        await new Promise<void>((resolve) => {
          const sub = dc.bufferedAmountLow.subscribe(() => {
            sub.unSubscribe();
            resolve();
          });
        });
      }
    },
    onMessage(cb) {
      dc.onMessage.subscribe((d) => cb(typeof d === 'string' ? d : new Uint8Array(d)));
    },
  };
}

/** The candidate type named in an SDP candidate line (`... typ srflx ...`). */
export function candidateType(line: string | undefined): CandidateKind {
  const m = / typ (host|srflx|prflx|relay)\b/.exec(line ?? '');
  return (m?.[1] as CandidateKind | undefined) ?? 'unknown';
}

function waitFor(pipe: Pipe, re: RegExp): Promise<RegExpExecArray> {
  return new Promise((resolve) => {
    pipe.onMessage((d) => {
      if (typeof d !== 'string') return;
      const m = re.exec(d);
      if (m) resolve(m);
    });
  });
}

/** Sends `bytes` bytes with the marker at the start of every chunk, then checks the peer's digest. */
export async function sendTransfer(pipe: Pipe, bytes: number, marker: string): Promise<PeerResult> {
  const ack = waitFor(pipe, /^ACK ([0-9a-f]{64}) (\d+)$/);
  const hash = createHash('sha256');
  const mark = new TextEncoder().encode(marker);
  for (let sent = 0; sent < bytes; sent += CHUNK_BYTES) {
    const chunk = randomBytes(Math.min(CHUNK_BYTES, bytes - sent));
    chunk.set(mark.subarray(0, chunk.length));
    hash.update(chunk);
    await pipe.send(chunk);
  }
  const digest = hash.digest('hex');
  await pipe.send(`END ${digest} ${bytes}`);
  const [, theirs, theirBytes] = await ack;
  const ok = theirs === digest && Number(theirBytes) === bytes;
  return ok ? { ok, sha256: digest, bytes } : { ok, error: 'peer digest differs', sha256: digest, bytes };
}

/** Hashes binary messages until `END`, answers with its own digest, checks it matches. */
export function receiveTransfer(pipe: Pipe): Promise<PeerResult> {
  return new Promise((resolve) => {
    const hash = createHash('sha256');
    let received = 0;
    pipe.onMessage((d) => {
      if (typeof d !== 'string') {
        hash.update(d);
        received += d.byteLength;
        return;
      }
      const m = /^END ([0-9a-f]{64}) (\d+)$/.exec(d);
      if (!m) return;
      const digest = hash.digest('hex');
      void pipe.send(`ACK ${digest} ${received}`).then(() => {
        const ok = digest === m[1] && received === Number(m[2]);
        resolve(ok ? { ok, sha256: digest, bytes: received } : { ok, error: 'digest differs', sha256: digest, bytes: received });
      });
    });
  });
}
