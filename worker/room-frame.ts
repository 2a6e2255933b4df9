/**
 * The room's hot path, sans-IO: 24 relayed signals per exchange. A signal frame is parsed once
 * (`parseRoomFrame`) and, when its text holds nothing but what was checked, relayed as that text
 * with the recipient's `seq` spliced in front (`spliceSeq`) instead of being rebuilt and
 * re-serialized. Anything else takes the ordinary path (parse, then `JSON.stringify` on send).
 */
import { ok, type Parsed } from '../protocol/errors.js';
import { parseFrame, parseRoomClientMessage, parseSignalData, type RoomClientMessage, type SignalData } from '../protocol/messages.js';

/** A parsed room frame; for a signal whose text holds nothing but what was checked, that text. */
interface RoomFrame {
  readonly parsed: Parsed<RoomClientMessage>;
  readonly raw: string | null;
}

/**
 * Parses a room frame like `parseRoomClientMessage`, parsing the JSON once, and tells whether a
 * signal's text can be relayed as it came (`spliceSeq`) instead of being re-serialized: only when
 * the frame has no key beyond `type` and `data` and `data` none beyond what `parseSignalData`
 * kept, nor any item of a batch (an unknown key, a `restart: false` or a `__proto__` makes the
 * counts differ). Values of
 * kept keys are the very strings and numbers checked, so the peer parses what was validated.
 * Duplicate keys resolve the same way (last wins) in our JSON.parse and the peer's.
 */
export function parseRoomFrame(frame: string | ArrayBuffer): RoomFrame {
  const f = parseFrame(frame);
  if (!f.ok) return { parsed: f, raw: null };
  const o = f.value;
  if (o['type'] !== 'signal') return { parsed: parseRoomClientMessage(frame), raw: null };
  const d = parseSignalData(o['data']);
  if (!d.ok) return { parsed: d, raw: null };
  const canonical = Object.keys(o).length === 2 && sameKeys(o['data'] as object, d.value);
  return { parsed: ok({ type: 'signal', data: d.value }), raw: canonical && typeof frame === 'string' ? frame : null };
}

/** Whether `raw` has exactly the keys `parseSignalData` kept in `checked` (a batch's items, each). */
function sameKeys(raw: object, checked: SignalData): boolean {
  if (Object.keys(raw).length !== Object.keys(checked).length) return false;
  if (checked.kind !== 'batch') return true;
  const items = (raw as { readonly items: readonly object[] }).items;
  return checked.items.every((item, i) => Object.keys(items[i]!).length === Object.keys(item).length);
}

/**
 * The `signal` frame for the peer, from the sender's checked text: `seq` goes in front of the
 * sender's own keys, so the signal data is neither re-serialized nor copied into a new object.
 */
export function spliceSeq(raw: string, seq: number): string {
  return `{"seq":${seq},${raw.slice(raw.indexOf('{') + 1)}`;
}
