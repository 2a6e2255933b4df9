/**
 * Client-side parsing of server frames (protocol/messages.ts, version 1). The service is not
 * trusted to be well-behaved: every frame is size-checked and parsed into a typed message or a
 * typed error, never thrown, and unknown types are ignored by the callers.
 */
import { fail, ok, type Parsed } from '../protocol/errors.js';
import {
  MAX_DIAL_TIMEOUT_MS,
  MAX_REASON_LENGTH,
  REQ_ID_RE,
  SESSION_ID_RE,
  parseServerFrame,
  parseSignalData,
  type IceServer,
  type PresenceServerMessage,
  type RoomServerMessage,
} from '../protocol/messages.js';
import { ENDPOINT_ID_RE } from '../protocol/turn-credentials.js';

/** Servers are chosen nearest first, at most two; each has a few URLs. Bounds a hostile list. */
const MAX_ICE_SERVERS = 8;
const MAX_URLS = 8;
const URL_RE = /^(stuns?|turns?):[^\s]{1,256}$/i;

type Obj = Record<string, unknown>;
const isStr = (v: unknown, max = 256): v is string => typeof v === 'string' && v.length <= max;

export function parseIceServers(v: unknown): IceServer[] | null {
  if (!Array.isArray(v) || v.length > MAX_ICE_SERVERS) return null;
  const out: IceServer[] = [];
  for (const s of v as unknown[]) {
    if (typeof s !== 'object' || s === null) return null;
    const o = s as Obj;
    const urls = typeof o['urls'] === 'string' ? [o['urls']] : o['urls'];
    if (!Array.isArray(urls) || urls.length === 0 || urls.length > MAX_URLS || !urls.every((u) => isStr(u) && URL_RE.test(u))) return null;
    if (o['username'] !== undefined && !isStr(o['username'], 512)) return null;
    if (o['credential'] !== undefined && !isStr(o['credential'], 512)) return null;
    out.push({
      urls: urls as string[],
      ...(o['username'] !== undefined ? { username: o['username'] as string } : {}),
      ...(o['credential'] !== undefined ? { credential: o['credential'] as string } : {}),
    });
  }
  return out;
}

const bad = (what: string): Parsed<never> => fail('invalid_field', `${what} frame has invalid fields`);

export function parsePresenceServerMessage(frame: unknown): Parsed<PresenceServerMessage> {
  const f = parseServerFrame(frame);
  if (!f.ok) return f;
  const o = f.value;
  const reqId = isStr(o['reqId'], 64) && REQ_ID_RE.test(o['reqId']) ? o['reqId'] : undefined;
  switch (o['type']) {
    case 'hello':
      return isStr(o['endpointId'], 128) && ENDPOINT_ID_RE.test(o['endpointId']) ? ok({ type: 'hello', endpointId: o['endpointId'] }) : bad('hello');
    case 'request': {
      const from = o['from'];
      const sid = o['sessionId'];
      if (!reqId || !isStr(from, 128) || !ENDPOINT_ID_RE.test(from) || !isStr(sid, 64) || !SESSION_ID_RE.test(sid)) return bad('request');
      const t = o['timeoutMs'];
      if (t === undefined) return ok({ type: 'request', reqId, from, sessionId: sid });
      if (!Number.isSafeInteger(t) || (t as number) < 0 || (t as number) > MAX_DIAL_TIMEOUT_MS) return bad('request');
      return ok({ type: 'request', reqId, from, sessionId: sid, timeoutMs: t as number });
    }
    case 'session': {
      const sid = o['sessionId'];
      const peer = o['peer'];
      const role = o['role'];
      const ice = parseIceServers(o['iceServers']);
      const deadline = o['deadline'];
      if (!reqId || !isStr(sid, 64) || !SESSION_ID_RE.test(sid) || !isStr(peer, 128) || !ENDPOINT_ID_RE.test(peer)) return bad('session');
      if ((role !== 'initiator' && role !== 'responder') || !ice || typeof deadline !== 'number' || !Number.isFinite(deadline)) return bad('session');
      return ok({ type: 'session', reqId, sessionId: sid, peer, role, iceServers: ice, deadline });
    }
    case 'rejected':
      if (!reqId) return bad('rejected');
      return ok({ type: 'rejected', reqId, reason: isStr(o['reason'], MAX_REASON_LENGTH) ? o['reason'] : '' });
    case 'dial_failed':
      if (!reqId || (o['code'] !== 'peer_offline' && o['code'] !== 'timeout')) return bad('dial_failed');
      return ok({ type: 'dial_failed', reqId, code: o['code'] });
    case 'cancelled':
      return reqId ? ok({ type: 'cancelled', reqId }) : bad('cancelled');
    case 'replaced':
      return ok({ type: 'replaced' });
    case 'error':
      return ok({
        type: 'error',
        code: 'internal',
        message: isStr(o['message'], MAX_REASON_LENGTH) ? o['message'] : '',
        ...(isStr(o['code'], 32) ? { code: o['code'] as 'internal' } : {}),
        ...(reqId ? { reqId } : {}),
      });
    default:
      return fail('unknown_type', 'unknown presence frame type');
  }
}

export function parseRoomServerMessage(frame: unknown): Parsed<RoomServerMessage> {
  const f = parseServerFrame(frame);
  if (!f.ok) return f;
  const o = f.value;
  switch (o['type']) {
    case 'joined': {
      const sid = o['sessionId'];
      const role = o['role'];
      const peer = o['peer'];
      const ice = parseIceServers(o['iceServers']);
      if (!isStr(sid, 64) || !SESSION_ID_RE.test(sid) || (role !== 'initiator' && role !== 'responder') || !isStr(peer, 128) || !ENDPOINT_ID_RE.test(peer)) return bad('joined');
      if (typeof o['peerPresent'] !== 'boolean' || !ice || typeof o['deadline'] !== 'number') return bad('joined');
      return ok({ type: 'joined', sessionId: sid, role, peer, peerPresent: o['peerPresent'], iceServers: ice, deadline: o['deadline'] });
    }
    case 'peer_joined':
      return ok({ type: 'peer_joined' });
    case 'peer_left':
      return ok({ type: 'peer_left' });
    case 'signal': {
      const seq = o['seq'];
      const d = parseSignalData(o['data']);
      if (!d.ok) return d;
      if (typeof seq !== 'number' || !Number.isSafeInteger(seq)) return bad('signal');
      return ok({ type: 'signal', seq, data: d.value });
    }
    case 'ice_servers': {
      const ice = parseIceServers(o['iceServers']);
      return ice ? ok({ type: 'ice_servers', iceServers: ice }) : bad('ice_servers');
    }
    case 'renewed': {
      const ice = parseIceServers(o['iceServers']);
      const d = o['deadline'];
      return ice && typeof d === 'number' && Number.isSafeInteger(d) ? ok({ type: 'renewed', deadline: d, iceServers: ice }) : bad('renewed');
    }
    case 'closed': {
      const r = o['reason'];
      return r === 'deadline' || r === 'bye' || r === 'ended' ? ok({ type: 'closed', reason: r }) : bad('closed');
    }
    case 'error':
      return ok({ type: 'error', code: 'internal', message: isStr(o['message'], MAX_REASON_LENGTH) ? o['message'] : '' });
    default:
      return fail('unknown_type', 'unknown room frame type');
  }
}
