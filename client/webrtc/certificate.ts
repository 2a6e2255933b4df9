/**
 * A self-signed ECDSA P-256 certificate for one link's DTLS, made with node:crypto alone: the key
 * pair and the signature on libuv's pool, and on the event loop only the few hundred bytes of DER
 * around them (under a millisecond). werift's own generator builds the same certificate through
 * @peculiar/x509's ASN.1 schema classes, which held the event loop 6-13 ms per certificate here,
 * inside the dial that took the spare (docs/BENCHMARKS.md, "The native dial's event loop").
 *
 * WebRTC peers check a DTLS certificate against the fingerprint signed into the SDP (and here the
 * identity proof), never its name or chain; what the certificate carries is what RFC 5280 needs
 * to parse: a v3 TBSCertificate with a random serial, one CN, a validity window and the key.
 */
import { generateKeyPair, randomBytes, sign, type KeyObject } from 'node:crypto';
import type { DtlsCertificate } from './backend.js';

/** How long a certificate is valid: as long as a link may live (a rebuild keeps it); peers do not check it. */
const VALIDITY_DAYS = 365;
/** Before now, for a peer whose clock runs behind. */
const BACKDATE_MS = 24 * 3600 * 1000;

/** DER: a tag, its length (short or long form) and the content. */
function der(tag: number, ...parts: Uint8Array[]): Buffer {
  const body = Buffer.concat(parts);
  const n = body.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...len]), body]);
}

const SEQUENCE = 0x30;
/** ecdsa-with-SHA256 (1.2.840.10045.4.3.2), as an AlgorithmIdentifier with no parameters. */
const ECDSA_SHA256 = der(SEQUENCE, Buffer.from([0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]));
/** Name ::= SEQUENCE { SET { SEQUENCE { id-at-commonName (2.5.4.3), UTF8String "homelink" } } } */
const NAME = der(SEQUENCE, der(0x31, der(SEQUENCE, Buffer.from([0x06, 0x03, 0x55, 0x04, 0x03]), der(0x0c, Buffer.from('homelink')))));
/** version [0] EXPLICIT INTEGER 2 (v3). */
const VERSION_3 = Buffer.from([0xa0, 0x03, 0x02, 0x01, 0x02]);

/** UTCTime (YYMMDDHHMMSSZ), which RFC 5280 requires for dates through 2049. */
function utcTime(d: Date): Buffer {
  const iso = d.toISOString(); // 2026-12-07T18:00:00.000Z
  const s = iso.slice(2, 4) + iso.slice(5, 7) + iso.slice(8, 10) + iso.slice(11, 13) + iso.slice(14, 16) + iso.slice(17, 19) + 'Z';
  return der(0x17, Buffer.from(s, 'ascii'));
}

/** A positive, minimally encoded 64-bit serial number. */
function serial(): Buffer {
  const b = randomBytes(8);
  b[0] = (b[0]! & 0x7f) | 0x40;
  return der(0x02, b);
}

function pem(label: string, body: Buffer): string {
  const b64 = body.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

const keyPair = (): Promise<{ publicKey: KeyObject; privateKey: KeyObject }> =>
  new Promise((resolve, reject) =>
    generateKeyPair('ec', { namedCurve: 'P-256' }, (err, publicKey, privateKey) => (err ? reject(err) : resolve({ publicKey, privateKey }))),
  );

const signDer = (data: Buffer, key: KeyObject): Promise<Buffer> =>
  new Promise((resolve, reject) => sign('sha256', data, { key, dsaEncoding: 'der' }, (err, sig) => (err ? reject(err) : resolve(sig))));

/**
 * A fresh P-256 key and a self-signed certificate for it, both as PEM (the certificate's
 * signature is ecdsa-with-SHA256, the key PKCS#8).
 * @example
 * const { certPem, keyPem } = await selfSignedP256(); // new X509Certificate(certPem).verify(...) holds
 */
export async function selfSignedP256(now = Date.now()): Promise<DtlsCertificate> {
  const { publicKey, privateKey } = await keyPair();
  const tbs = der(
    SEQUENCE,
    VERSION_3,
    serial(),
    ECDSA_SHA256,
    NAME,
    der(SEQUENCE, utcTime(new Date(now - BACKDATE_MS)), utcTime(new Date(now + VALIDITY_DAYS * 86_400_000))),
    NAME,
    publicKey.export({ type: 'spki', format: 'der' }),
  );
  const signature = await signDer(tbs, privateKey);
  const cert = der(SEQUENCE, tbs, ECDSA_SHA256, der(0x03, Buffer.from([0]), signature));
  return { certPem: pem('CERTIFICATE', cert), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}
