/**
 * The demo page's server (web/server.ts) on a real socket: it serves the page, the bundle and the
 * config, and its dev-credentials endpoint hands out tokens the issuer's keys verify, while
 * refusing malformed, oversized or hostile requests with a 4xx and a reason.
 */
import { createLocalJWKSet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDevIssuer, type DevIssuer } from '../../dev/issuer.js';
import { verifyAccessToken, verifyIdentityCertificate } from '../../protocol/tokens.js';
import { MAX_BODY_BYTES, startWebServer, type WebServer } from '../../web/server.js';

const PUBLIC_JWK = { kty: 'EC', crv: 'P-256', x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU', y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0' };

describe('demo page server', () => {
  let web: WebServer;
  let issuer: DevIssuer;
  beforeAll(async () => {
    issuer = await createDevIssuer();
    web = await startWebServer({ host: '127.0.0.1', port: 0, signalingUrl: 'ws://127.0.0.1:1', issuer, defaultHome: 'home-1' });
  });
  afterAll(async () => {
    await web?.close();
  });
  const post = (body: string): Promise<Response> =>
    fetch(`${web.url}dev/credentials`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });

  it('serves the page, the bundle and the config', async () => {
    expect((await fetch(web.url)).headers.get('content-type')).toContain('text/html');
    const js = await fetch(`${web.url}app.js`);
    expect(js.status).toBe(200);
    expect(await js.text()).toContain('/dev/credentials');
    const config = (await (await fetch(`${web.url}config.json`)).json()) as { signalingUrl: string; loopbackOnly: boolean; trust: { jwks: { keys: { d?: string }[] } } };
    expect(config.signalingUrl).toBe('ws://127.0.0.1:1');
    expect(config.loopbackOnly).toBe(true);
    expect(config.trust.jwks.keys.every((k) => k.d === undefined)).toBe(true);
    expect((await fetch(`${web.url}../../etc/passwd`)).status).toBe(404);
  });

  it('issues a token and an identity certificate that verify', async () => {
    const res = await post(JSON.stringify({ sub: 'browser-1', homes: ['home-1'], publicJwk: PUBLIC_JWK }));
    expect(res.status).toBe(200);
    const { token, certificate } = (await res.json()) as { token: string; certificate: string };
    const keys = createLocalJWKSet(issuer.publicJwks);
    expect(await verifyAccessToken(token, keys, { issuer: issuer.issuer, audience: issuer.audience })).toMatchObject({ sub: 'browser-1', homes: ['home-1'] });
    expect((await verifyIdentityCertificate(certificate, keys, { issuer: issuer.issuer, audience: issuer.peerAudience })).jwk).toMatchObject({ x: PUBLIC_JWK.x });
  });

  it.each([
    ['not JSON', '{', /not JSON/],
    ['bad id', JSON.stringify({ sub: '../x', homes: ['h'], publicJwk: PUBLIC_JWK }), /sub must be/],
    ['no homes', JSON.stringify({ sub: 'a', homes: [], publicJwk: PUBLIC_JWK }), /homes/],
    ['too many homes', JSON.stringify({ sub: 'a', homes: Array.from({ length: 9 }, (_, i) => `h${i}`), publicJwk: PUBLIC_JWK }), /homes/],
    ['a private key', JSON.stringify({ sub: 'a', homes: ['h'], publicJwk: { ...PUBLIC_JWK, d: 'secret' } }), /public EC key/],
    ['no key', JSON.stringify({ sub: 'a', homes: ['h'] }), /public EC key/],
  ])('refuses %s with 400 and a reason', async (_what, body, reason) => {
    const res = await post(body);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toMatch(reason);
  });

  it('refuses an oversized body with 413 and keeps serving', async () => {
    const res = await post(JSON.stringify({ sub: 'a', homes: ['h'], pad: 'x'.repeat(MAX_BODY_BYTES) }));
    expect(res.status).toBe(413);
    expect((await fetch(`${web.url}health`)).status).toBe(200);
  });
});
