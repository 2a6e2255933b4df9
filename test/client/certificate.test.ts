/**
 * The DTLS certificate made with node:crypto alone (client/webrtc/certificate.ts): Node's X.509
 * parser and openssl read it, its signature verifies with its own key, the key PEM is that key,
 * and no two share a key or serial. The handshakes with it (werift, node-datachannel, Chromium)
 * are the backend, interop and browser suites.
 */
import { execFileSync } from 'node:child_process';
import { createPrivateKey, createPublicKey, X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { selfSignedP256 } from '../../client/webrtc/certificate.js';

describe('selfSignedP256', () => {
  it('is a v3 self-signed P-256 certificate that verifies with its own key, valid from a day back for a year', async () => {
    const now = Date.UTC(2026, 11, 7, 18, 0, 0);
    const { certPem, keyPem } = await selfSignedP256(now);
    const x = new X509Certificate(certPem);
    expect(x.subject).toBe('CN=homelink');
    expect(x.issuer).toBe('CN=homelink');
    expect(x.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(x.verify(x.publicKey)).toBe(true);
    expect(x.checkPrivateKey(createPrivateKey(keyPem))).toBe(true);
    expect(new Date(x.validFrom).getTime()).toBe(now - 24 * 3600 * 1000);
    expect(new Date(x.validTo).getTime()).toBe(now + 365 * 24 * 3600 * 1000);
    expect(keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(certPem.split('\n').every((l) => l.length <= 64)).toBe(true);
  });

  it('openssl reads it as X.509 v3 signed ecdsa-with-SHA256', async () => {
    const { certPem } = await selfSignedP256();
    const text = execFileSync('openssl', ['x509', '-noout', '-text'], { input: certPem }).toString();
    expect(text).toMatch(/Version: 3 \(0x2\)/);
    expect(text).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
    expect(text).toMatch(/ASN1 OID: prime256v1/);
  });

  it('gives every certificate its own key and serial', async () => {
    const certs = await Promise.all([1, 2, 3, 4].map(() => selfSignedP256()));
    const xs = certs.map((c) => new X509Certificate(c.certPem));
    expect(new Set(xs.map((x) => x.serialNumber)).size).toBe(4);
    expect(new Set(xs.map((x) => x.fingerprint256)).size).toBe(4);
    expect(new Set(certs.map((c) => createPublicKey(c.keyPem).export({ format: 'jwk' }).x)).size).toBe(4);
    // A positive serial, minimally encoded: its first byte is 0x40-0x7f.
    for (const x of xs) expect(parseInt(x.serialNumber.slice(0, 2), 16)).toBeGreaterThanOrEqual(0x40);
  });
});
