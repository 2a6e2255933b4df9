/**
 * A small TURN client for tests, built on our codec and its client side
 * (protocol/stun/client.ts, shared with the benchmark's load generator): it mints
 * requests, learns REALM/NONCE from 401/438 answers and signs with the
 * long-term key. Transport is the caller's business (virtual server calls or
 * real sockets).
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import {
  Attr,
  StunClass,
  StunMethod,
  StunWriter,
  addLongTermAuth,
  decodeStun,
  encodeChannelNumber,
  encodeLifetime,
  encodeRequestedTransport,
  encodeXorAddress,
  findAttr,
  longTermKey,
  readResponse,
  verifyMessageIntegrity,
  type ResponseFields,
  type StunMessage,
} from '../../../protocol/stun/index.js';

export const hmacSha1 = (k: Uint8Array, d: Uint8Array) => new Uint8Array(createHmac('sha1', k).update(d).digest());
export const md5 = (d: Uint8Array) => new Uint8Array(createHash('md5').update(d).digest());

/** REST credentials as protocol/turn-credentials.ts mints them (sync version for tests). */
export function restCredential(secret: string, endpointId: string, expiresAt: number): { username: string; password: string } {
  const username = `${expiresAt}:${endpointId}`;
  const password = createHmac('sha1', secret).update(username).digest('base64');
  return { username, password };
}

/**
 * A client with REST credentials for `endpointId` that expire `ttlS` seconds from now.
 * @example const c = restClient(SECRET, 'endpoint-1');
 */
export function restClient(secret: string, endpointId: string, ttlS = 600): TestTurnClient {
  const c = restCredential(secret, endpointId, Math.floor(Date.now() / 1000) + ttlS);
  return new TestTurnClient(c.username, c.password);
}

export type AttrList = Array<[number, Uint8Array]>;

export class TestTurnClient {
  realm: string | null = null;
  nonce: string | null = null;
  fingerprint = true;

  constructor(
    public username: string,
    public password: string,
  ) {}

  get key(): Uint8Array {
    return longTermKey(md5, this.username, `${this.realm}`, this.password);
  }

  /** A request; signed when REALM and NONCE are known (or `sign` forces a choice). */
  request(method: number, attrs: AttrList = [], sign?: boolean): { tid: Uint8Array; bytes: Uint8Array } {
    const tid = new Uint8Array(randomBytes(12));
    const w = new StunWriter(method, StunClass.Request, tid);
    for (const [t, v] of attrs) w.add(t, typeof v === 'function' ? (v as (tid: Uint8Array) => Uint8Array)(tid) : v);
    const doSign = sign ?? (this.realm !== null && this.nonce !== null);
    if (doSign) addLongTermAuth(w, { username: this.username, realm: this.realm ?? 'x', nonce: this.nonce ?? 'x', key: this.key }, hmacSha1);
    if (this.fingerprint) w.addFingerprint();
    return { tid, bytes: w.finish() };
  }

  indication(method: number, attrs: AttrList): Uint8Array {
    const tid = new Uint8Array(randomBytes(12));
    const w = new StunWriter(method, StunClass.Indication, tid);
    for (const [t, v] of attrs) w.add(t, typeof v === 'function' ? (v as (tid: Uint8Array) => Uint8Array)(tid) : v);
    return w.finish();
  }

  /** Parses a response; learns REALM/NONCE from errors. */
  read(bytes: Uint8Array): Response {
    const r = decodeStun(bytes);
    if (!r.ok) throw new Error(`bad response: ${r.error.detail}`);
    const m = r.value;
    const fields = readResponse(m);
    if (fields.realm !== null) this.realm = fields.realm;
    if (fields.nonce !== null) this.nonce = fields.nonce;
    const integrityOk = findAttr(m, Attr.MessageIntegrity) ? verifyMessageIntegrity(m, this.key, hmacSha1) : null;
    return { ...fields, msg: m, integrityOk };
  }
}

/** A response as the test client reads it: the shared fields, the message, and whether its integrity checked out (null: none). */
export interface Response extends ResponseFields {
  msg: StunMessage;
  integrityOk: boolean | null;
}

export const A = {
  transportUdp: (): [number, Uint8Array] => [Attr.RequestedTransport, encodeRequestedTransport(17)],
  lifetime: (s: number): [number, Uint8Array] => [Attr.Lifetime, encodeLifetime(s)],
  channel: (n: number): [number, Uint8Array] => [Attr.ChannelNumber, encodeChannelNumber(n)],
  /** XOR-PEER-ADDRESS depends on the transaction id: passed as a function the client resolves. */
  peer: (ip: string, port: number): [number, Uint8Array] => [
    Attr.XorPeerAddress,
    ((tid: Uint8Array) => encodeXorAddress({ family: ip.includes(':') ? 6 : 4, ip, port }, tid)) as unknown as Uint8Array,
  ],
  data: (d: Uint8Array): [number, Uint8Array] => [Attr.Data, d],
};

export { StunMethod, StunClass, Attr };
