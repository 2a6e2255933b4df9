/**
 * The signaling wire protocol, version 1: JSON text frames typed by direction.
 *
 * Two sockets, both authenticated with an access token carried in
 * `Sec-WebSocket-Protocol` (see `wsProtocols`), never in the URL:
 *
 *   GET /v1/presence            one per endpoint; connection requests and answers
 *   GET /v1/rooms/:sessionId    one per side of an accepted session; SDP, candidates,
 *                               identity proofs and bye, relayed in order to the peer
 *
 * Flow: initiator `dial{reqId,to}` on presence -> target gets `request{reqId,from,sessionId}`
 * (and acknowledges it with `ringing{reqId}` when it declared `?caps=ack`) -> target
 * `answer{reqId,accept}` -> both get `session{...iceServers}` (or the initiator
 * gets `rejected` / `dial_failed{code:'peer_offline'|'timeout'}`) -> both open the room
 * (with `?caps=early` on both sides, each gets its half of the session sooner: the dialer in an
 * early `session` once the request is delivered, the target in the `request`; see
 * `CAP_EARLY_JOIN`)
 * socket and exchange `signal{data}` frames; `renew` there extends a session both sides are
 * still using past its deadline.
 *
 * Every parser returns a typed value or a typed error (`Parsed<T>`); it never throws.
 */
import { fail, ok, type Parsed } from './errors.js';
import { parseIceUrl } from './ice-url.js';
import { ENDPOINT_ID_RE } from './turn-credentials.js';

export const PROTOCOL_VERSION = 1;
/** The subprotocol the server selects; the client offers it first. */
export const WS_PROTOCOL = 'homelink.v1';
/** Prefix of the second offered subprotocol, which carries the access token. */
export const WS_AUTH_PREFIX = 'homelink.auth.';

/** The subprotocol list a client offers: the token rides in the handshake, not the URL. */
export function wsProtocols(token: string): string[] {
  return [WS_PROTOCOL, WS_AUTH_PREFIX + token];
}

/** Extracts the token from a `Sec-WebSocket-Protocol` header value; null if absent or malformed. */
export function tokenFromProtocolHeader(header: string | null | undefined): string | null {
  if (!header || header.length > 8192) return null;
  const parts = header.split(',').map((p) => p.trim());
  if (!parts.includes(WS_PROTOCOL)) return null;
  const auth = parts.filter((p) => p.startsWith(WS_AUTH_PREFIX));
  if (auth.length !== 1) return null;
  const token = auth[0]!.slice(WS_AUTH_PREFIX.length);
  return token.length > 0 ? token : null;
}

// ---- Keepalive ---------------------------------------------------------------------------

/**
 * Application keepalive on both sockets. The client sends exactly {@link PING_FRAME} and
 * expects exactly {@link PONG_FRAME}; the Durable Objects answer it with
 * `ctx.setWebSocketAutoResponse`, so a ping neither wakes nor bills a hibernated object.
 * The frames are fixed strings because auto-response matches the whole frame byte for byte.
 */
export const PING_FRAME = '{"v":1,"type":"ping"}';
export const PONG_FRAME = '{"v":1,"type":"pong"}';
/**
 * How often a client pings an idle socket. Home routers commonly drop idle TCP mappings
 * after 60-300 s (RFC 5382 asks for at least 2 h 4 min, few comply), mobile carriers sooner;
 * 25 s keeps a mapping alive behind all of them at ~1 frame per 25 s per socket.
 */
export const KEEPALIVE_INTERVAL_MS = 25_000;
/** A pong later than this after its ping means the path is dead: the client reconnects. */
export const KEEPALIVE_TIMEOUT_MS = 10_000;
/**
 * The service drops an endpoint's presence when it has heard nothing (no frame, no ping)
 * for this long: two missed pings plus the pong deadline.
 */
export const PRESENCE_STALE_MS = 2 * KEEPALIVE_INTERVAL_MS + KEEPALIVE_TIMEOUT_MS;

// ---- Limits (named, with reasons) -------------------------------------------------------

/** Largest frame accepted on any socket. An SDP with a few media sections is < 8 KiB; 64 KiB leaves room. */
export const MAX_FRAME_BYTES = 64 * 1024;
export const MAX_SDP_BYTES = 32 * 1024;
/** An ICE candidate line is < 256 bytes; 1 KiB leaves room for extensions. */
export const MAX_CANDIDATE_BYTES = 1024;
/** Identity certificate (a JWT) and proof (a JWS) together stay well under this. */
export const MAX_IDENTITY_BYTES = 8 * 1024;
export const MAX_REASON_LENGTH = 200;
/**
 * Most signals in one `batch`: a setup's burst is an SDP and a few candidates per interface; the
 * frame limit bounds the bytes anyway.
 */
export const MAX_BATCH_ITEMS = 32;
export const REQ_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
export const SESSION_ID_RE = /^[A-Za-z0-9_-]{16,64}$/;
/**
 * Bounds of a dial's time budget (`dial.timeoutMs`). Below a second nothing could answer (the
 * service's own offline verdict takes longer); five minutes is the service's largest request
 * timeout, and the service caps a budget at its configured one anyway.
 */
export const MIN_DIAL_TIMEOUT_MS = 1000;
export const MAX_DIAL_TIMEOUT_MS = 300_000;
/** Per-socket message rate: bursts of trickled candidates fit; floods do not. */
export const RATE_LIMIT = { burst: 200, perSecond: 50 } as const;

// ---- Shared shapes -----------------------------------------------------------------------

export interface IceServer {
  readonly urls: string[];
  readonly username?: string;
  readonly credential?: string;
}

export type Role = 'initiator' | 'responder';

export type DialFailure = 'peer_offline' | 'timeout';

/** Error codes carried in `error` frames. */
export type ErrorCode =
  | 'malformed'
  | 'oversized'
  | 'unknown_type'
  | 'bad_version'
  | 'invalid_field'
  | 'out_of_state'
  | 'rate_limited'
  | 'internal';

// ---- Presence socket ----------------------------------------------------------------------

export type PresenceClientMessage =
  /**
   * `timeoutMs`: how much longer the dialer will wait for the link (its remaining budget when it
   * sends the dial; relative, since clocks differ). The service times the request out then
   * (capped at its REQUEST_TIMEOUT_MS) and tells the target what is left in `request.timeoutMs`,
   * so all three give up together. Absent: the service's request timeout.
   */
  | { readonly type: 'dial'; readonly reqId: string; readonly to: string; readonly timeoutMs?: number }
  | { readonly type: 'answer'; readonly reqId: string; readonly accept: boolean; readonly reason?: string }
  /** `reason: 'timeout'`: the dialer gives up because its budget ran out (the target hears `cancelled{reason:'timeout'}`). */
  | { readonly type: 'cancel'; readonly reqId: string; readonly reason?: 'timeout' }
  /**
   * Delivery receipt: the endpoint got `request{reqId}` and is deciding. Sent at once by a
   * client that declared {@link CAP_DELIVERY_ACK} when it connected (unless its answer goes out
   * at once, which proves delivery just the same). A request sent on a socket that stays silent
   * past the service's ack deadline was lost with the socket's path: the service closes that
   * socket (1001 `unresponsive`) and the dialer gets `dial_failed{peer_offline}` at once instead
   * of waiting for its timeout.
   */
  | { readonly type: 'ringing'; readonly reqId: string };

// ---- Presence capabilities ---------------------------------------------------------------

/**
 * Capabilities travel in the presence URL's query (`/v1/presence?caps=ack`), so the service
 * knows them when it accepts the socket, before it delivers any held request there. A frame
 * would arrive only after those. Unknown capabilities are ignored (newer clients, older
 * service); a service that knows none ignores the query.
 */
export const CAPS_PARAM = 'caps';
/** The client sends `ringing{reqId}` for every `request` it gets (see `PresenceClientMessage`). */
export const CAP_DELIVERY_ACK = 'ack';
/**
 * The client joins rooms with the `ticket` its `session` carries (`?ticket=` on the room URL), so
 * a session between two such clients needs no room storage on its common path (see
 * {@link SessionInfo.ticket}).
 */
export const CAP_ROOM_TICKET = 'ticket';
/**
 * The client reads signal batches (`SignalData` kind `batch`) and sends them in a session whose
 * `session` says `batch`, which the service says only when both sides declared this.
 */
export const CAP_SIGNAL_BATCH = 'batch';
/**
 * Early join (issue 10 item 3: one signaling round trip fewer per dial). Both sides must also have
 * declared {@link CAP_ROOM_TICKET}. A dialer whose target declared it too gets its room ticket and
 * ICE servers in a `session` with `early: true` as soon as the request reaches the target, before
 * the target answers: it joins the room and builds its offer while the target decides (the library
 * sends it once the target is in the room, `peer_joined`, so the room stores nothing). The target
 * gets the same in its `request` (`early`), and joins the room as it accepts, without waiting for
 * the service to confirm. Neither side then gets a later `session`; the dialer still
 * gets `rejected`, `dial_failed` or `cancelled` if the request ends without an accept.
 */
export const CAP_EARLY_JOIN = 'early';
/** Longest `caps` value read: a handful of short names; anything longer is ignored whole. */
export const MAX_CAPS_CHARS = 128;

export interface PresenceCaps {
  /** The client acknowledges every delivered request (`ringing`). */
  readonly deliveryAck: boolean;
  /** The client presents room tickets (`CAP_ROOM_TICKET`). Absent: false. */
  readonly roomTicket?: boolean;
  /** The client reads and sends signal batches (`CAP_SIGNAL_BATCH`). Absent: false. */
  readonly signalBatch?: boolean;
  /** The client joins rooms early (`CAP_EARLY_JOIN`). Absent: false. */
  readonly earlyJoin?: boolean;
}

/**
 * Reads the capabilities from a presence URL's query string (`?caps=a,b`). Never throws: a
 * missing, repeated, oversized or garbled value declares nothing, which is the legacy behaviour.
 *
 * @example
 * parsePresenceCaps(new URL(req.url).search) // { deliveryAck: true } for '?caps=ack'
 */
export function parsePresenceCaps(search: string): PresenceCaps {
  const value = queryParam(search, CAPS_PARAM, MAX_CAPS_CHARS, 4 * MAX_CAPS_CHARS);
  if (value === null) return { deliveryAck: false, roomTicket: false, signalBatch: false, earlyJoin: false };
  const caps = value.split(',');
  return {
    deliveryAck: caps.includes(CAP_DELIVERY_ACK),
    roomTicket: caps.includes(CAP_ROOM_TICKET),
    signalBatch: caps.includes(CAP_SIGNAL_BATCH),
    earlyJoin: caps.includes(CAP_EARLY_JOIN),
  };
}

/**
 * The one value of `name` in a query string, or null when it is absent, repeated, longer than
 * `max`, the query is longer than `maxQuery`, or the query does not decode. Never throws.
 */
function queryParam(search: string, name: string, max: number, maxQuery: number): string | null {
  if (search.length > maxQuery) return null;
  let values: string[];
  try {
    values = new URLSearchParams(search).getAll(name);
  } catch {
    return null;
  }
  return values.length === 1 && values[0]!.length <= max ? values[0]! : null;
}

/** The query string a client appends to the presence URL to declare `caps`. */
export function presenceQuery(caps: PresenceCaps): string {
  const names = [
    ...(caps.deliveryAck ? [CAP_DELIVERY_ACK] : []),
    ...(caps.roomTicket === true ? [CAP_ROOM_TICKET] : []),
    ...(caps.signalBatch === true ? [CAP_SIGNAL_BATCH] : []),
    ...(caps.earlyJoin === true ? [CAP_EARLY_JOIN] : []),
  ];
  return names.length > 0 ? `?${CAPS_PARAM}=${names.join(',')}` : '';
}

/** The room URL's query parameter that carries the session's ticket. */
export const TICKET_PARAM = 'ticket';
/** Longest ticket accepted: two endpoint ids of up to 128 characters, a deadline and a MAC, encoded. */
export const MAX_TICKET_CHARS = 512;
/** A ticket's shape: base64url payload, a dot, base64url MAC (what the service issues). */
export const TICKET_RE = /^[A-Za-z0-9_-]{1,460}\.[A-Za-z0-9_-]{43}$/;

/** The query string of a room URL: the ticket when there is one. */
export function roomQuery(ticket: string | undefined): string {
  return ticket !== undefined ? `?${TICKET_PARAM}=${ticket}` : '';
}

/**
 * Reads the ticket from a room URL's query string. Never throws: a missing, repeated, oversized or
 * malformed value is no ticket (the room then needs its stored record, as before tickets).
 */
export function parseRoomTicket(search: string): string | null {
  const value = queryParam(search, TICKET_PARAM, MAX_TICKET_CHARS, 2 * MAX_TICKET_CHARS);
  return value !== null && TICKET_RE.test(value) ? value : null;
}

export interface SessionInfo {
  readonly reqId: string;
  readonly sessionId: string;
  readonly peer: string;
  readonly role: Role;
  readonly iceServers: IceServer[];
  /** Unix ms after which the room closes. */
  readonly deadline: number;
  /**
   * Present when both sides declared {@link CAP_ROOM_TICKET}: the session's members and deadline
   * signed by the service. The client joins the room with it (`roomQuery`), and the room rebuilds
   * itself from it when it has nothing else (no socket, no stored record). Opaque to the client.
   */
  readonly ticket?: string;
  /**
   * True when both sides declared {@link CAP_SIGNAL_BATCH}: each side may send its signals to the
   * other in `batch`es. Absent from an older service, which does not relay them.
   */
  readonly batch?: boolean;
  /**
   * True on the dialer's `session` sent before the target answered ({@link CAP_EARLY_JOIN}): join
   * now; the dial may still end in `rejected`, `dial_failed` or `cancelled`.
   */
  readonly early?: boolean;
}

/** What a `request` carries when both sides declared {@link CAP_EARLY_JOIN}: the target's half of a `session`. */
export interface EarlyJoin {
  readonly iceServers: IceServer[];
  readonly deadline: number;
  readonly ticket: string;
  readonly batch?: boolean;
}

export type PresenceServerMessage =
  | { readonly type: 'hello'; readonly endpointId: string }
  /**
   * `timeoutMs`: what is left of the dialer's budget when the request is sent (ms, ≥ 0). This
   * service always sends it; optional for clients talking to an older one.
   */
  | { readonly type: 'request'; readonly reqId: string; readonly from: string; readonly sessionId: string; readonly timeoutMs?: number; readonly early?: EarlyJoin }
  | ({ readonly type: 'session' } & SessionInfo)
  | { readonly type: 'rejected'; readonly reqId: string; readonly reason: string }
  | { readonly type: 'dial_failed'; readonly reqId: string; readonly code: DialFailure }
  /**
   * The request ended without a session. `reason: 'timeout'` when the dialer's budget ran out (its
   * deadline passed before the answer reached the service): the target's `accept()` reports it as
   * `Timeout`, like the dialer. Absent when it was withdrawn (`cancel`, the dialer left), and from
   * an older service.
   */
  | { readonly type: 'cancelled'; readonly reqId: string; readonly reason?: 'timeout' }
  | { readonly type: 'replaced' }
  | { readonly type: 'error'; readonly code: ErrorCode; readonly message: string; readonly reqId?: string };

// ---- Room socket --------------------------------------------------------------------------

/**
 * What one side sends the other through the room, opaque to the service beyond its shape: one
 * signal, a `batch` of them, or the `bye` that ends the room.
 */
export type SignalData =
  | SignalItem
  /**
   * Several signals in one frame, handled by the peer in order as if each had come alone. Sent
   * only in a session whose `session` said `batch` (both sides declared `CAP_SIGNAL_BATCH`, and
   * the service relays batches): each frame is a billed WebSocket message and runtime work on the
   * service, and a setup's trickled candidates come in bursts. Never holds a `bye` (the room
   * must see it) or another batch.
   */
  | { readonly kind: 'batch'; readonly items: readonly SignalItem[] }
  | { readonly kind: 'bye'; readonly reason?: string };

/** One signal: a description, a candidate or the identity proof (what a `batch` may hold). */
export type SignalItem =
  /**
   * `restart`: an ICE restart on the existing connection (RFC 8445 §9). `rebuild`: the offer of
   * a fresh peer connection that replaces the current one (a side whose stack cannot restart ICE,
   * client/link.ts); the receiver builds a new connection too. The DTLS certificate, and so the
   * fingerprint, stays the one signed at setup. `probe`: the offer of a second connection, built
   * beside the current one with direct candidates only, which the link moves to once it connects
   * (a relayed link looking for a direct path without an ICE restart; its answer and candidates
   * carry `probe` too, so they never mix with the current connection's). At most one of the three.
   */
  | { readonly kind: 'offer'; readonly sdp: string; readonly restart?: boolean; readonly rebuild?: boolean; readonly probe?: boolean }
  | { readonly kind: 'answer'; readonly sdp: string; readonly probe?: boolean }
  | {
      readonly kind: 'candidate';
      /** Belongs to the probe connection (see `offer`). */
      readonly probe?: boolean;
      /** '' marks end of candidates. */
      readonly candidate: string;
      readonly sdpMid?: string | null;
      readonly sdpMLineIndex?: number | null;
      readonly usernameFragment?: string | null;
    }
  /**
   * `resume`: the sender speaks the rebuild protocol (rebuild offers, channel acks and resume
   * frames, protocol/resume.ts). `noRestart`: its WebRTC stack cannot restart ICE, so the link
   * recovers by rebuilding. `probe`: it answers probe offers. `earlyDtls`: its DTLS keeps records
   * that arrive before its own handshake started, so the peer may send its first flight as soon
   * as its ICE connects. All absent from an older peer.
   */
  | {
      readonly kind: 'identity';
      readonly cert: string;
      readonly proof: string;
      readonly resume?: boolean;
      readonly noRestart?: boolean;
      readonly probe?: boolean;
      readonly earlyDtls?: boolean;
    };

/** The identity signal's capability flags: each absent or a boolean, kept only when true. */
const IDENTITY_FLAGS = ['resume', 'noRestart', 'probe', 'earlyDtls'] as const;

/**
 * Room socket, client to server.
 * - `signal`: relayed to the peer in order.
 * - `ice_servers`: fresh TURN credentials for the asking side only (`ice_servers` back).
 * - `renew`: extends the session past its deadline (a link that outlives SESSION_TTL_SECONDS
 *   must still be able to restart ICE). Granted only while both sides are connected to the room
 *   with unexpired tokens: the room's deadline becomes now + SESSION_TTL_SECONDS (a side can
 *   still rejoin until then), and both sides get `renewed{deadline, iceServers}`
 *   with TURN credentials minted anew. Otherwise `error{out_of_state}` and nothing changes.
 */
export type RoomClientMessage =
  | { readonly type: 'signal'; readonly data: SignalData }
  | { readonly type: 'ice_servers' }
  | { readonly type: 'renew' };

export type RoomServerMessage =
  | {
      readonly type: 'joined';
      readonly sessionId: string;
      readonly role: Role;
      readonly peer: string;
      readonly peerPresent: boolean;
      readonly iceServers: IceServer[];
      readonly deadline: number;
    }
  | { readonly type: 'peer_joined' }
  | { readonly type: 'peer_left' }
  | { readonly type: 'signal'; readonly seq: number; readonly data: SignalData }
  | { readonly type: 'ice_servers'; readonly iceServers: IceServer[] }
  /** The session was renewed (by either side): the new deadline (unix ms) and fresh ICE servers. */
  | { readonly type: 'renewed'; readonly deadline: number; readonly iceServers: IceServer[] }
  | { readonly type: 'closed'; readonly reason: 'deadline' | 'bye' | 'ended' }
  | { readonly type: 'error'; readonly code: ErrorCode; readonly message: string };

// ---- Parsing ------------------------------------------------------------------------------

type Obj = Record<string, unknown>;

const utf8Length = (s: string): number => new TextEncoder().encode(s).length;

/** Parses a text frame into a JSON object, enforcing the frame size limit. */
export function parseFrame(frame: unknown): Parsed<Obj> {
  if (typeof frame !== 'string') return fail('malformed', 'binary frames are not accepted');
  // Cheap pre-check on UTF-16 length (each unit is at least one UTF-8 byte).
  if (frame.length > MAX_FRAME_BYTES || utf8Length(frame) > MAX_FRAME_BYTES) {
    return fail('oversized', `frame larger than ${MAX_FRAME_BYTES} bytes`);
  }
  let v: unknown;
  try {
    v = JSON.parse(frame);
  } catch {
    return fail('malformed', 'frame is not valid JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail('malformed', 'frame is not a JSON object');
  return ok(v as Obj);
}

const str = (o: Obj, k: string, re?: RegExp, max = 256): string | undefined => {
  const v = o[k];
  if (typeof v !== 'string' || v.length > max) return undefined;
  if (re && !re.test(v)) return undefined;
  return v;
};

const optReason = (o: Obj): Parsed<string | undefined> => {
  if (o['reason'] === undefined) return ok(undefined);
  const r = str(o, 'reason', undefined, MAX_REASON_LENGTH);
  return r === undefined ? fail('invalid_field', 'reason must be a short string') : ok(r);
};

export function parsePresenceClientMessage(frame: unknown): Parsed<PresenceClientMessage> {
  const f = parseFrame(frame);
  if (!f.ok) return f;
  const o = f.value;
  const reqId = str(o, 'reqId', REQ_ID_RE, 64);
  switch (o['type']) {
    case 'dial': {
      const to = str(o, 'to', ENDPOINT_ID_RE, 128);
      if (!reqId || !to) return fail('invalid_field', 'dial needs reqId and to');
      const t = o['timeoutMs'];
      if (t === undefined) return ok({ type: 'dial', reqId, to });
      if (!Number.isSafeInteger(t) || (t as number) < MIN_DIAL_TIMEOUT_MS || (t as number) > MAX_DIAL_TIMEOUT_MS) {
        return fail('invalid_field', `timeoutMs must be an integer from ${MIN_DIAL_TIMEOUT_MS} to ${MAX_DIAL_TIMEOUT_MS}`);
      }
      return ok({ type: 'dial', reqId, to, timeoutMs: t as number });
    }
    case 'answer': {
      if (!reqId || typeof o['accept'] !== 'boolean') return fail('invalid_field', 'answer needs reqId and accept');
      const r = optReason(o);
      if (!r.ok) return r;
      return ok(r.value === undefined ? { type: 'answer', reqId, accept: o['accept'] } : { type: 'answer', reqId, accept: o['accept'], reason: r.value });
    }
    case 'cancel': {
      if (!reqId) return fail('invalid_field', 'cancel needs reqId');
      const reason = o['reason'];
      if (reason !== undefined && reason !== 'timeout') return fail('invalid_field', "cancel reason must be 'timeout' when present");
      return ok({ type: 'cancel', reqId, ...(reason === 'timeout' ? { reason } : {}) });
    }
    case 'ringing':
      if (!reqId) return fail('invalid_field', 'ringing needs reqId');
      return ok({ type: 'ringing', reqId });
    default:
      return fail('unknown_type', 'unknown message type');
  }
}

export function parseSignalData(v: unknown): Parsed<SignalData> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail('invalid_field', 'data must be an object');
  const o = v as Obj;
  switch (o['kind']) {
    case 'batch': {
      const items = o['items'];
      if (!Array.isArray(items) || items.length === 0 || items.length > MAX_BATCH_ITEMS) return fail('invalid_field', `a batch holds 1 to ${MAX_BATCH_ITEMS} signals`);
      const out: SignalItem[] = [];
      for (const item of items) {
        const d = parseSignalItem(item);
        if (!d.ok) return d;
        out.push(d.value);
      }
      return ok({ kind: 'batch', items: out });
    }
    case 'bye': {
      const r = optReason(o);
      if (!r.ok) return r;
      return ok(r.value === undefined ? { kind: 'bye' } : { kind: 'bye', reason: r.value });
    }
    default:
      return parseSignalItem(o);
  }
}

/** One signal of `SignalData` (not a batch, not a bye): what a batch may hold. */
export function parseSignalItem(v: unknown): Parsed<SignalItem> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail('invalid_field', 'a signal must be an object');
  const o = v as Obj;
  switch (o['kind']) {
    case 'offer':
    case 'answer': {
      const sdp = str(o, 'sdp', undefined, MAX_SDP_BYTES);
      if (sdp === undefined || sdp.length === 0) return fail('invalid_field', 'sdp missing or too long');
      if (o['probe'] !== undefined && typeof o['probe'] !== 'boolean') return fail('invalid_field', 'probe must be boolean');
      if (o['kind'] === 'answer') return ok(o['probe'] ? { kind: 'answer', sdp, probe: true } : { kind: 'answer', sdp });
      if (o['restart'] !== undefined && typeof o['restart'] !== 'boolean') return fail('invalid_field', 'restart must be boolean');
      if (o['rebuild'] !== undefined && typeof o['rebuild'] !== 'boolean') return fail('invalid_field', 'rebuild must be boolean');
      if ([o['restart'], o['rebuild'], o['probe']].filter(Boolean).length > 1) return fail('invalid_field', 'an offer is at most one of restart, rebuild and probe');
      return ok(o['restart'] ? { kind: 'offer', sdp, restart: true } : o['rebuild'] ? { kind: 'offer', sdp, rebuild: true } : o['probe'] ? { kind: 'offer', sdp, probe: true } : { kind: 'offer', sdp });
    }
    case 'candidate': {
      const candidate = str(o, 'candidate', undefined, MAX_CANDIDATE_BYTES);
      if (candidate === undefined) return fail('invalid_field', 'candidate missing or too long');
      const mid = o['sdpMid'];
      const idx = o['sdpMLineIndex'];
      const uf = o['usernameFragment'];
      if (mid !== undefined && mid !== null && (typeof mid !== 'string' || mid.length > 64)) return fail('invalid_field', 'bad sdpMid');
      if (idx !== undefined && idx !== null && !(Number.isInteger(idx) && (idx as number) >= 0 && (idx as number) < 256)) {
        return fail('invalid_field', 'bad sdpMLineIndex');
      }
      if (uf !== undefined && uf !== null && (typeof uf !== 'string' || uf.length > 256)) return fail('invalid_field', 'bad usernameFragment');
      if (o['probe'] !== undefined && typeof o['probe'] !== 'boolean') return fail('invalid_field', 'probe must be boolean');
      return ok({
        kind: 'candidate',
        candidate,
        ...(o['probe'] ? { probe: true } : {}),
        ...(mid !== undefined ? { sdpMid: mid as string | null } : {}),
        ...(idx !== undefined ? { sdpMLineIndex: idx as number | null } : {}),
        ...(uf !== undefined ? { usernameFragment: uf as string | null } : {}),
      });
    }
    case 'identity': {
      const cert = str(o, 'cert', undefined, MAX_IDENTITY_BYTES);
      const proof = str(o, 'proof', undefined, MAX_IDENTITY_BYTES);
      if (!cert || !proof) return fail('invalid_field', 'identity needs cert and proof');
      const flags: { -readonly [F in (typeof IDENTITY_FLAGS)[number]]?: true } = {};
      for (const f of IDENTITY_FLAGS) {
        if (o[f] !== undefined && typeof o[f] !== 'boolean') return fail('invalid_field', `${f} must be boolean`);
        if (o[f] === true) flags[f] = true;
      }
      return ok({ kind: 'identity', cert, proof, ...flags });
    }
    case 'batch':
    case 'bye':
      return fail('invalid_field', `a batch cannot hold a ${o['kind']}`);
    default:
      return fail('unknown_type', 'unknown signal kind');
  }
}

export function parseRoomClientMessage(frame: unknown): Parsed<RoomClientMessage> {
  const f = parseFrame(frame);
  if (!f.ok) return f;
  const o = f.value;
  switch (o['type']) {
    case 'signal': {
      const d = parseSignalData(o['data']);
      if (!d.ok) return d;
      return ok({ type: 'signal', data: d.value });
    }
    case 'ice_servers':
      return ok({ type: 'ice_servers' });
    case 'renew':
      return ok({ type: 'renew' });
    default:
      return fail('unknown_type', 'unknown message type');
  }
}

/** Server-to-client frames are parsed by clients too: a compromised server must not crash them. */
export function parseServerFrame(frame: unknown): Parsed<{ type: string } & Obj> {
  const f = parseFrame(frame);
  if (!f.ok) return f;
  if (typeof f.value['type'] !== 'string') return fail('malformed', 'frame has no type');
  return ok(f.value as { type: string } & Obj);
}

export const encode = (m: PresenceServerMessage | RoomServerMessage | PresenceClientMessage | RoomClientMessage): string =>
  JSON.stringify(m);

// ---- Server -> client (parsed by endpoints) ----------------------------------------------
// The client side of the same contract, next to the client -> server parsers above: the
// service is not trusted to be well-behaved either, so every frame is size-checked and parsed
// into a typed message or a typed error, never thrown; callers ignore unknown types.

/** Servers are chosen nearest first, at most two; each has a few URLs. Bounds a hostile list. */
const MAX_ICE_SERVERS = 8;
const MAX_URLS = 8;
/** Longest ICE URL accepted from the service. */
const MAX_ICE_URL_CHARS = 256;

const isStr = (v: unknown, max = 256): v is string => typeof v === 'string' && v.length <= max;

export function parseIceServers(v: unknown): IceServer[] | null {
  if (!Array.isArray(v) || v.length > MAX_ICE_SERVERS) return null;
  const out: IceServer[] = [];
  for (const s of v as unknown[]) {
    if (typeof s !== 'object' || s === null) return null;
    const o = s as Obj;
    const urls = typeof o['urls'] === 'string' ? [o['urls']] : o['urls'];
    if (!Array.isArray(urls) || urls.length === 0 || urls.length > MAX_URLS || !urls.every((u) => isStr(u, MAX_ICE_URL_CHARS) && parseIceUrl(u) !== null)) return null;
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
      if (t !== undefined && (!Number.isSafeInteger(t) || (t as number) < 0 || (t as number) > MAX_DIAL_TIMEOUT_MS)) return bad('request');
      let early: EarlyJoin | undefined;
      if (o['early'] !== undefined) {
        const e = o['early'];
        if (typeof e !== 'object' || e === null || Array.isArray(e)) return bad('request');
        const x = e as Record<string, unknown>;
        const ice = parseIceServers(x['iceServers']);
        const deadline = x['deadline'];
        const ticket = x['ticket'];
        const batch = x['batch'];
        if (!ice || typeof deadline !== 'number' || !Number.isFinite(deadline) || !isStr(ticket, MAX_TICKET_CHARS) || !TICKET_RE.test(ticket)) return bad('request');
        if (batch !== undefined && typeof batch !== 'boolean') return bad('request');
        early = { iceServers: ice, deadline, ticket, ...(batch === true ? { batch } : {}) };
      }
      return ok({ type: 'request', reqId, from, sessionId: sid, ...(t !== undefined ? { timeoutMs: t as number } : {}), ...(early ? { early } : {}) });
    }
    case 'session': {
      const sid = o['sessionId'];
      const peer = o['peer'];
      const role = o['role'];
      const ice = parseIceServers(o['iceServers']);
      const deadline = o['deadline'];
      if (!reqId || !isStr(sid, 64) || !SESSION_ID_RE.test(sid) || !isStr(peer, 128) || !ENDPOINT_ID_RE.test(peer)) return bad('session');
      if ((role !== 'initiator' && role !== 'responder') || !ice || typeof deadline !== 'number' || !Number.isFinite(deadline)) return bad('session');
      const ticket = o['ticket'];
      if (ticket !== undefined && (!isStr(ticket, MAX_TICKET_CHARS) || !TICKET_RE.test(ticket))) return bad('session');
      const batch = o['batch'];
      if (batch !== undefined && typeof batch !== 'boolean') return bad('session');
      const early = o['early'];
      // An early session is the dialer's, and its room admits it by ticket only.
      if (early !== undefined && (typeof early !== 'boolean' || (early && (role !== 'initiator' || ticket === undefined)))) return bad('session');
      return ok({
        type: 'session',
        reqId,
        sessionId: sid,
        peer,
        role,
        iceServers: ice,
        deadline,
        ...(ticket !== undefined ? { ticket } : {}),
        ...(batch === true ? { batch } : {}),
        ...(early === true ? { early } : {}),
      });
    }
    case 'rejected':
      if (!reqId) return bad('rejected');
      return ok({ type: 'rejected', reqId, reason: isStr(o['reason'], MAX_REASON_LENGTH) ? o['reason'] : '' });
    case 'dial_failed':
      if (!reqId || (o['code'] !== 'peer_offline' && o['code'] !== 'timeout')) return bad('dial_failed');
      return ok({ type: 'dial_failed', reqId, code: o['code'] });
    case 'cancelled': {
      const reason = o['reason'];
      if (!reqId || (reason !== undefined && reason !== 'timeout')) return bad('cancelled');
      return ok({ type: 'cancelled', reqId, ...(reason === 'timeout' ? { reason } : {}) });
    }
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
