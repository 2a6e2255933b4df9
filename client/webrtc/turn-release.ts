/**
 * Releases a TURN allocation that its own client left behind: libjuice (the ICE agent in
 * node-datachannel's prebuilt binaries) never deletes its allocation when a connection closes, so
 * each closed link holds one allocation per side on the relay until its lifetime runs out (libjuice
 * asks for 600 s), and an endpoint that links and closes more than the relay's per-user quota
 * (10 allocations) in ten minutes can no longer relay.
 *
 * An allocation is keyed by its 5-tuple (RFC 8656 §2.2): the client's address and port, the
 * relay's, and UDP. libjuice sends its TURN requests from the one UDP socket whose port its host
 * candidates announce. Once the connection closed that port is free again, so a socket bound to
 * the same local address and port presents the same 5-tuple, and a Refresh with LIFETIME 0
 * (RFC 8656 §7.2: "a Refresh request with a requested lifetime of 0 ... deletes the allocation"),
 * signed with the long-term credentials the allocation was made with (RFC 8489 §9.2: the first
 * try is answered 401 with REALM and NONCE), deletes it. A relay with no allocation on that
 * 5-tuple answers 437, which is fine. Behind a NAT the mapping usually still exists (it was in
 * use a moment ago), so the relay sees the same 5-tuple there too; where it does not, the relay
 * answers 437 and the allocation expires as before.
 *
 * Best effort and bounded by `DEALLOCATE_TIMEOUT_MS` in all; never throws. Node only.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import {
  Attr,
  StunClass,
  StunMethod,
  StunWriter,
  addLongTermAuth,
  decodeStun,
  encodeLifetime,
  longTermKey,
  looksLikeStun,
  readResponse,
  type ResponseFields,
} from '../../protocol/stun/index.js';

/** The whole release (bind, challenge, signed Refresh per relay) gives up after this. */
export const RELEASE_TIMEOUT_MS = 1_000;
/** First retransmission of a request (RFC 8489 §6.2.1 uses 500 ms; the relay is one round trip away). */
const RTO_MS = 100;
/** How long to wait for the closed connection's socket to free its port. */
const BIND_RETRY_MS = 20;

const hmacSha1 = (key: Uint8Array, data: Uint8Array): Uint8Array => new Uint8Array(createHmac('sha1', key).update(data).digest());
const md5 = (data: Uint8Array): Uint8Array => new Uint8Array(createHash('md5').update(data).digest());

/** One relay the closed connection may hold an allocation on. */
export interface HeldAllocation {
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly password: string;
}

/**
 * Deletes the allocations the closed connection's socket (`local`) may hold on `relays`.
 * Resolves with the relays that confirmed the deletion (tests read it).
 * @example
 * await releaseAllocations({ address: '0.0.0.0', port: 51234 }, [{ host: 'relay.example', port: 3478, username, password }]);
 */
export async function releaseAllocations(local: { address: string; port: number }, relays: readonly HeldAllocation[]): Promise<string[]> {
  if (relays.length === 0) return [];
  const deadline = Date.now() + RELEASE_TIMEOUT_MS;
  const socket = await bindWhenFree(local, deadline);
  if (!socket) return [];
  try {
    const released = await Promise.all(relays.map((r) => releaseOne(socket, r, deadline)));
    return relays.filter((_, i) => released[i]).map((r) => `${r.host}:${r.port}`);
  } finally {
    socket.close();
  }
}

async function bindWhenFree(local: { address: string; port: number }, deadline: number): Promise<dgram.Socket | null> {
  while (Date.now() < deadline) {
    const s = dgram.createSocket(local.address.includes(':') ? 'udp6' : 'udp4');
    const ok = await new Promise<boolean>((resolve) => {
      s.once('error', () => resolve(false));
      s.bind(local.port, local.address, () => resolve(true));
    });
    if (ok) {
      s.on('error', () => undefined);
      return s;
    }
    s.close();
    await new Promise((r) => setTimeout(r, BIND_RETRY_MS));
  }
  return null;
}

async function releaseOne(socket: dgram.Socket, relay: HeldAllocation, deadline: number): Promise<boolean> {
  const refresh = (tid: Uint8Array) => new StunWriter(StunMethod.Refresh, StunClass.Request, tid).add(Attr.Lifetime, encodeLifetime(0));
  const challenge = await transact(socket, relay, (tid) => refresh(tid).addFingerprint().finish(), deadline);
  if (!challenge) return false;
  if (challenge.cls === StunClass.SuccessResponse) return true;
  if (challenge.code !== 401 || challenge.realm === null || challenge.nonce === null) return false;
  const auth = { username: relay.username, realm: challenge.realm, nonce: challenge.nonce, key: longTermKey(md5, relay.username, challenge.realm, relay.password) };
  const answer = await transact(socket, relay, (tid) => addLongTermAuth(refresh(tid), auth, hmacSha1).addFingerprint().finish(), deadline);
  return answer?.cls === StunClass.SuccessResponse;
}

/** One request with retransmissions until its response or the deadline; null on no answer. */
function transact(socket: dgram.Socket, relay: HeldAllocation, build: (tid: Uint8Array) => Uint8Array, deadline: number): Promise<ResponseFields | null> {
  const tid = new Uint8Array(randomBytes(12));
  const bytes = build(tid);
  return new Promise((resolve) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const done = (r: ResponseFields | null): void => {
      clearTimeout(timer);
      socket.off('message', onMessage);
      resolve(r);
    };
    const onMessage = (data: Buffer): void => {
      if (!looksLikeStun(data)) return;
      const d = decodeStun(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      if (!d.ok || d.value.cls === StunClass.Request || d.value.cls === StunClass.Indication) return;
      if (!d.value.transactionId.every((b, i) => b === tid[i])) return;
      done(readResponse(d.value));
    };
    socket.on('message', onMessage);
    let wait = RTO_MS;
    const send = (): void => {
      const left = deadline - Date.now();
      if (left <= 0) return done(null);
      socket.send(bytes, relay.port, relay.host, () => undefined);
      timer = setTimeout(send, Math.min(wait, left));
      wait *= 2;
    };
    send();
  });
}
