/**
 * The browser backend's fallback for the presented DTLS certificate (client/webrtc/native.ts):
 * Chromium has no `getRemoteCertificates()`, so the DER comes from the stats report (transport ->
 * remoteCertificateId -> certificate.base64Certificate). The report here has the shape Chromium
 * produces; the real Chromium path is exercised end to end by the browser project.
 */
import { X509Certificate, createHash } from 'node:crypto';
import { CipherContext, HashAlgorithm, NamedCurveAlgorithm, SignatureAlgorithm } from 'werift';
import { beforeAll, describe, expect, it } from 'vitest';
import { remoteCertificateFromReport } from '../../client/webrtc/native.js';

/** A report as `RTCPeerConnection.getStats()` returns it: a map of stats objects by id. */
function report(entries: Record<string, unknown>[]): Map<string, Record<string, unknown>> {
  return new Map(entries.map((e) => [String(e['id']), e]));
}

// A real DTLS certificate of the kind a peer presents (ECDSA P-256, self-signed, made by werift).
let DER: Buffer;
let DER_B64: string;
beforeAll(async () => {
  const keys = await CipherContext.createSelfSignedCertificateWithKey(
    { signature: SignatureAlgorithm.ecdsa_3, hash: HashAlgorithm.sha256_4 },
    NamedCurveAlgorithm.secp256r1_23,
  );
  DER = new X509Certificate(keys.certPem).raw;
  DER_B64 = DER.toString('base64');
});

describe('presented certificate from getStats()', () => {
  it('follows the transport to its remote certificate and returns the DER bytes', async () => {
    const r = report([
      { id: 'T01', type: 'transport', remoteCertificateId: 'CF-remote', localCertificateId: 'CF-local' },
      { id: 'CF-local', type: 'certificate', base64Certificate: 'AAAA' },
      { id: 'CF-remote', type: 'certificate', base64Certificate: DER_B64, fingerprint: '00:11', fingerprintAlgorithm: 'sha-256' },
    ]);
    const der = remoteCertificateFromReport(r);
    expect(der && Buffer.from(der).equals(DER)).toBe(true);
    // Hashed with WebCrypto as the backend does, it is the SHA-256 of those bytes, not the stats' own fingerprint string.
    const hex = Buffer.from(await crypto.subtle.digest('SHA-256', der!)).toString('hex');
    expect(hex).toBe(createHash('sha256').update(DER).digest('hex'));
  });

  it('null before the handshake, and for anything malformed or oversized', () => {
    expect(remoteCertificateFromReport(report([{ id: 'T01', type: 'transport' }]))).toBeNull();
    expect(remoteCertificateFromReport(report([{ id: 'T01', type: 'transport', remoteCertificateId: 'missing' }]))).toBeNull();
    for (const bad of ['', 'not base64!', '@@@@', 'A'.repeat(64 * 1024 + 4), 42]) {
      const r = report([
        { id: 'T01', type: 'transport', remoteCertificateId: 'C' },
        { id: 'C', type: 'certificate', base64Certificate: bad },
      ]);
      expect(remoteCertificateFromReport(r)).toBeNull();
    }
    // The id must name a certificate entry, not some other stats object.
    const wrong = report([
      { id: 'T01', type: 'transport', remoteCertificateId: 'P' },
      { id: 'P', type: 'candidate-pair', base64Certificate: DER_B64 },
    ]);
    expect(remoteCertificateFromReport(wrong)).toBeNull();
  });
});
