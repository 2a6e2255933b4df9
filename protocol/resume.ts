/**
 * Channel continuity across a rebuilt peer connection: the frames two endpoints exchange on the
 * link's control channel (stream 0, client/link.ts) so reliable channels lose and duplicate
 * nothing when the connection under them is replaced (a WebRTC stack without ICE restart
 * recovers a lost path that way, client/session.ts).
 *
 * An ordered reliable channel delivers every message once and in order (RFC 8831 §6.6), so the
 * number of messages a side received on a channel is the sequence number of the next one it
 * expects. Channels are named by their SCTP stream id, the same at both ends (RFC 8832 §6); a
 * rebuilt connection re-creates them as negotiated channels on the same ids.
 *
 *   ack     `a<stream>:<count>`  while the link runs: "I received <count> messages on <stream>";
 *                                the sender may drop what it holds up to there.
 *   resume  `r<stream>:<count>`  once the rebuilt connection is verified: the same count, after
 *                                which the sender resends what it holds from <count> on, then
 *                                carries on with new messages.
 *   close   `c<stream>:<count>`  sent before the application closes a channel, <count> being the
 *                                messages it sent: the peer's channel then ends for good when its
 *                                stream closes. A stream that closes without it went with its
 *                                connection (the peer dropped it to rebuild) and comes back.
 *
 * Text frames, so they never look like the control channel's other frames (`p`, a JSON bye).
 * Portable: no Node import.
 */
import { fail, ok, type Parsed } from './errors.js';

/** Highest SCTP stream id (RFC 9260 §3.3.1: 16 bits; 65535 is reserved by RFC 8831 §6.5). */
export const MAX_STREAM_ID = 65534;
/** Longest frame: a letter, five digits, ':', sixteen digits. Anything longer is not one of ours. */
export const MAX_RESUME_FRAME = 24;

export type ResumeFrame = { readonly kind: 'ack' | 'resume' | 'close'; readonly stream: number; readonly count: number };

const FRAME_RE = /^([arc])(\d{1,5}):(\d{1,16})$/;
const LETTER = { ack: 'a', resume: 'r', close: 'c' } as const;
const KIND = { a: 'ack', r: 'resume', c: 'close' } as const;

/** Encodes an ack, resume or close frame. Throws `RangeError` on an id or count out of range (a bug here). */
export function encodeResumeFrame(f: ResumeFrame): string {
  if (!Number.isInteger(f.stream) || f.stream < 0 || f.stream > MAX_STREAM_ID) throw new RangeError('stream id out of range');
  if (!Number.isSafeInteger(f.count) || f.count < 0) throw new RangeError('message count out of range');
  return `${LETTER[f.kind]}${f.stream}:${f.count}`;
}

/** True when a control-channel text frame looks like one of these (letter then digit); `parseResumeFrame` decides. */
export function isResumeFrame(m: string): boolean {
  const c = m.charCodeAt(0);
  return m.length > 1 && (c === 0x61 || c === 0x72 || c === 0x63) && m.charCodeAt(1) >= 0x30 && m.charCodeAt(1) <= 0x39;
}

/** Parses an ack, resume or close frame; a typed error for anything else, never a throw. */
export function parseResumeFrame(m: string): Parsed<ResumeFrame> {
  if (m.length > MAX_RESUME_FRAME) return fail('oversized', 'resume frame too long');
  const r = FRAME_RE.exec(m);
  if (!r) return fail('malformed', 'not an ack or resume frame');
  const stream = Number(r[2]);
  const count = Number(r[3]);
  if (stream > MAX_STREAM_ID) return fail('invalid_field', 'stream id out of range');
  if (!Number.isSafeInteger(count)) return fail('invalid_field', 'message count out of range');
  return ok({ kind: KIND[r[1] as keyof typeof KIND], stream, count });
}
