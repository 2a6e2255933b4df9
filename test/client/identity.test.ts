/**
 * verifyPeer with its imported keys kept (client/identity.ts): the issuer keys per `trust.jwks`
 * object and the peers' device keys per JWK. Keeping them must not let one peer's key stand for
 * another's, nor a JWKS stand for one that replaced it.
 */
import { describe, expect, it } from 'vitest';
import { signProof, verifyPeer, type DeviceIdentity, type Trust } from '../../client/identity.js';
import { testIssuer } from './helpers.js';

const SID = 'session-0123456789abcdef';
const FP_A = 'sha-256 ' + 'AA:'.repeat(31) + 'AA';
const FP_B = 'sha-256 ' + 'BB:'.repeat(31) + 'BB';

async function check(trust: Trust, cert: DeviceIdentity, signer: DeviceIdentity, sub: string) {
  const proof = await signProof(signer, { sid: SID, role: 'initiator', fp: [FP_A, FP_B] });
  return verifyPeer({ cert: cert.certificate, proof, trust, expectedSub: sub, sessionId: SID, peerRole: 'initiator', localFingerprint: FP_B, remoteSdpFingerprint: FP_A });
}

describe('verifyPeer with kept keys', () => {
  it('keeps each peer to its own key, however often both are verified', async () => {
    const issuer = await testIssuer();
    const a = await issuer.device('app-1');
    const b = await issuer.device('app-2');
    for (let i = 0; i < 3; i++) {
      expect(await check(issuer.trust, a, a, 'app-1')).toMatchObject({ ok: true, sub: 'app-1' });
      expect(await check(issuer.trust, b, b, 'app-2')).toMatchObject({ ok: true, sub: 'app-2' });
      // a's proof under b's certificate, and b's under a's, with both keys kept by now.
      expect(await check(issuer.trust, b, a, 'app-2')).toMatchObject({ ok: false, code: 'IdentityMismatch' });
      expect(await check(issuer.trust, a, b, 'app-1')).toMatchObject({ ok: false, code: 'IdentityMismatch' });
    }
  });

  it('reads each trust object on its own: a replaced JWKS refuses what the old one accepted, and the old still accepts', async () => {
    const issuer = await testIssuer();
    const other = await testIssuer(); // same issuer URL, another key
    const a = await issuer.device('app-1');
    expect(await check(issuer.trust, a, a, 'app-1')).toMatchObject({ ok: true });
    const rotated: Trust = { issuer: issuer.trust.issuer, jwks: { keys: [...other.trust.jwks.keys] } };
    expect(await check(rotated, a, a, 'app-1')).toMatchObject({ ok: false, code: 'Unauthorized' });
    expect(await check(issuer.trust, a, a, 'app-1')).toMatchObject({ ok: true });
  });
});
