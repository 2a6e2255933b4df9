/**
 * The demo page's WebRTC backend: the client library's native backend, with the DTLS peer
 * certificate read where Chromium exposes it.
 *
 * Identity binding needs the fingerprint of the certificate the DTLS handshake actually
 * presented. `client/webrtc/native.ts` reads it with `RTCDtlsTransport.getRemoteCertificates()`,
 * which Chromium does not implement, so every link from Chromium failed with IdentityMismatch
 * ("DTLS handshake presented no certificate"). Chromium reports the presented certificate in
 * `getStats()` instead (RTCCertificateStats, reached from the transport's `remoteCertificateId`,
 * with the DER bytes in `base64Certificate`); the fingerprint is computed here from those bytes,
 * never copied from SDP or from the stats' own fingerprint string.
 * Browser only.
 */
import { NativeBackend } from '../client/webrtc/native.js';
import { normaliseFingerprint, parseCandidate, type BackendFactory, type CandidateInit, type PeerOptions } from '../client/webrtc/backend.js';

const hex = (b: ArrayBuffer): string => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, '0')).join(':');

/**
 * SHA-256 fingerprint of the remote DTLS certificate from `getStats()` (W3C webrtc-stats
 * RTCTransportStats.remoteCertificateId -> RTCCertificateStats.base64Certificate); null before
 * the handshake completed.
 */
export async function remoteCertificateFromStats(pc: RTCPeerConnection): Promise<string | null> {
  const report = await pc.getStats();
  let der: Uint8Array | null = null;
  report.forEach((s: Record<string, unknown>) => {
    if (der || s['type'] !== 'transport' || typeof s['remoteCertificateId'] !== 'string') return;
    const cert = report.get(s['remoteCertificateId']) as Record<string, unknown> | undefined;
    const b64 = cert?.['base64Certificate'];
    if (typeof b64 !== 'string' || b64.length === 0 || b64.length > 64 * 1024) return;
    try {
      der = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    } catch {
      der = null;
    }
  });
  if (!der) return null;
  return normaliseFingerprint(hex(await crypto.subtle.digest('SHA-256', der as Uint8Array<ArrayBuffer>)));
}

/** NativeBackend whose presented-certificate check also works in Chromium, optionally announcing loopback candidates only. */
class StatsCertificateBackend extends NativeBackend {
  constructor(opts: PeerOptions, loopbackOnly: boolean) {
    super(opts);
    if (!loopbackOnly) return;
    // The local stack lives on 127.0.0.1: announce only loopback candidates (and relayed ones, which
    // are on the relay's loopback address), so no peer sends to this machine's other interfaces.
    let handler: ((c: CandidateInit | null) => void) | null = null;
    Object.defineProperty(this, 'onCandidate', {
      configurable: true,
      get: () => (handler ? (c: CandidateInit | null) => {
        const info = c ? parseCandidate(c.candidate) : null;
        if (c === null || c.candidate === '' || info?.address.startsWith('127.')) handler?.(c);
      } : null),
      set: (fn: ((c: CandidateInit | null) => void) | null) => {
        handler = fn;
      },
    });
  }

  override async remoteCertificateFingerprint(): Promise<string | null> {
    const direct = await super.remoteCertificateFingerprint();
    if (direct) return direct;
    // The peer connection is private to NativeBackend; reading it is the least invasive way to
    // reach getStats() until the library reads the certificate there itself.
    const pc = (this as unknown as { pc: RTCPeerConnection }).pc;
    return remoteCertificateFromStats(pc);
  }
}

/**
 * The backend factory the demo page passes to `Endpoint.connect`.
 * @param loopbackOnly announce only 127.0.0.0/8 candidates (the local stack is loopback-only)
 */
export function browserBackend(loopbackOnly: boolean): BackendFactory {
  return async (opts: PeerOptions) => new StatsCertificateBackend(opts, loopbackOnly);
}
