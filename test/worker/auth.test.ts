/**
 * Authentication at the edge (RFC 8725): every bad token is refused with 401 before any object
 * wakes, and nothing is touched: the victim's presence socket is neither replaced nor disturbed.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { base64url, exportJWK, generateKeyPair, importJWK, SignJWT, type CryptoKey, type JWK } from 'jose';
import { createDevIssuer, KEY_FILE, type DevIssuer } from '../../dev/issuer.js';
import { WS_AUTH_PREFIX, WS_PROTOCOL } from '../../protocol/messages.js';
import { ACCESS_TOKEN_TYP, IDENTITY_CERT_TYP } from '../../protocol/tokens.js';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { connectRaw, online, type TestSocket } from './helpers.js';

let sig: SignalingHandle;
let issuer: DevIssuer;
let dir: string;
let key: CryptoKey;
let kid: string;
let publicJwk: JWK;
let victim: TestSocket;

const now = (): number => Math.floor(Date.now() / 1000);

interface Shape {
  header?: Record<string, unknown>;
  claims?: Record<string, unknown>;
  signWith?: CryptoKey;
}

/** Signs a token like the issuer does, with one thing changed. */
async function craft(s: Shape = {}): Promise<string> {
  const claims: Record<string, unknown> = {
    iss: issuer.issuer,
    aud: issuer.audience,
    sub: 'hub-1',
    homes: ['home-1'],
    iat: now(),
    nbf: now(),
    exp: now() + 600,
    ...s.claims,
  };
  for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k];
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', typ: ACCESS_TOKEN_TYP, kid, ...s.header } as { alg: string })
    .sign(s.signWith ?? key);
}

const b64json = (v: unknown): string => base64url.encode(new TextEncoder().encode(JSON.stringify(v)));

async function hmac(secret: Uint8Array<ArrayBuffer>, input: string): Promise<string> {
  const k = await crypto.subtle.importKey('raw', secret, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return base64url.encode(new Uint8Array(await crypto.subtle.sign('HMAC', k, new TextEncoder().encode(input))));
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'homelink-auth-'));
  issuer = await createDevIssuer({ dir });
  const priv = JSON.parse(await readFile(join(dir, KEY_FILE), 'utf8')) as JWK;
  kid = priv.kid!;
  key = (await importJWK(priv, 'ES256')) as CryptoKey;
  publicJwk = issuer.publicJwks.keys[0]!;
  sig = await startSignaling({ issuer });
  victim = await online(sig.url, await issuer.accessToken({ sub: 'hub-1', homes: ['home-1'] }));
});

afterAll(async () => {
  await sig?.close();
  await rm(dir, { recursive: true, force: true });
});

const presenceUrl = (): string => `${sig.url.replace('http', 'ws')}/v1/presence`;

async function expectRefused(protocols: string[] | undefined, url = presenceUrl()): Promise<void> {
  const r = await connectRaw(url, protocols);
  if (r.ok) r.socket.close();
  expect(r.ok).toBe(false);
  if (!r.ok) {
    expect(r.status).toBe(401);
    // One answer for every failure, and nothing of the token in it.
    expect(JSON.parse(r.body)).toEqual({ error: 'unauthorized' });
  }
}

const asToken = (t: string): string[] => [WS_PROTOCOL, WS_AUTH_PREFIX + t];

describe('refused with 401, nothing touched', () => {
  const cases: Array<[string, () => Promise<string>]> = [
    ['expired', () => craft({ claims: { exp: now() - 120, nbf: now() - 600, iat: now() - 600 } })],
    ['not yet valid (nbf in the future)', () => craft({ claims: { nbf: now() + 300 } })],
    ['wrong aud', () => craft({ claims: { aud: 'homelink-peer' } })],
    ['wrong iss', () => craft({ claims: { iss: 'https://evil.example' } })],
    ['wrong typ (identity certificate type)', () => craft({ header: { typ: IDENTITY_CERT_TYP } })],
    ['wrong typ (plain JWT)', () => craft({ header: { typ: 'JWT' } })],
    ['a real identity certificate', async () => issuer.identityCertificate({ sub: 'hub-1', publicJwk })],
    ['alg none', async () => `${b64json({ alg: 'none', typ: ACCESS_TOKEN_TYP })}.${b64json({ iss: issuer.issuer, aud: issuer.audience, sub: 'hub-1', homes: ['home-1'], nbf: now(), exp: now() + 600 })}.`],
    [
      'HS256 signed with the public JWK as secret',
      async () => {
        const input = `${b64json({ alg: 'HS256', typ: ACCESS_TOKEN_TYP, kid })}.${b64json({ iss: issuer.issuer, aud: issuer.audience, sub: 'hub-1', homes: ['home-1'], nbf: now(), exp: now() + 600 })}`;
        return `${input}.${await hmac(new TextEncoder().encode(JSON.stringify(publicJwk)), input)}`;
      },
    ],
    [
      'HS256 signed with the raw public key as secret',
      async () => {
        const raw = new Uint8Array(await crypto.subtle.exportKey('raw', (await importJWK(publicJwk, 'ES256')) as CryptoKey));
        const input = `${b64json({ alg: 'HS256', typ: ACCESS_TOKEN_TYP, kid })}.${b64json({ iss: issuer.issuer, aud: issuer.audience, sub: 'hub-1', homes: ['home-1'], nbf: now(), exp: now() + 600 })}`;
        return `${input}.${await hmac(raw, input)}`;
      },
    ],
    [
      'tampered payload',
      async () => {
        const [h, , s] = (await craft()).split('.');
        return `${h}.${b64json({ iss: issuer.issuer, aud: issuer.audience, sub: 'hub-1', homes: ['home-1', 'home-9'], nbf: now(), exp: now() + 600 })}.${s}`;
      },
    ],
    [
      'unknown key (same kid, other key)',
      async () => craft({ signWith: (await generateKeyPair('ES256')).privateKey }),
    ],
    [
      'unknown key (jwk embedded in the header)',
      async () => {
        const other = await generateKeyPair('ES256');
        return craft({ header: { kid: 'attacker', jwk: await exportJWK(other.publicKey) }, signWith: other.privateKey });
      },
    ],
    ['missing sub', () => craft({ claims: { sub: undefined } })],
    ['sub not an endpoint id', () => craft({ claims: { sub: 'hub 1/../x' } })],
    // A number that reads as an endpoint id once turned into text ("12345") is still not a string.
    ['numeric sub', () => craft({ claims: { sub: 12345 } })],
    ['sub as an array', () => craft({ claims: { sub: ['hub-1'] } })],
    ['numeric home', () => craft({ claims: { homes: [1] } })],
    ['missing homes', () => craft({ claims: { homes: undefined } })],
    ['missing exp', () => craft({ claims: { exp: undefined } })],
    ['garbage', async () => 'not-a-jwt'],
    ['garbage with dots', async () => 'a.b.c'],
  ];

  for (const [name, make] of cases) {
    it(name, async () => {
      await expectRefused(asToken(await make()));
    });
  }

  it('no token, or the token offered twice, or only in the URL', async () => {
    await expectRefused([WS_PROTOCOL]);
    await expectRefused(undefined);
    const good = await issuer.accessToken({ sub: 'hub-1', homes: ['home-1'] });
    await expectRefused([WS_PROTOCOL, WS_AUTH_PREFIX + good, WS_AUTH_PREFIX + good + 'x']);
    await expectRefused([WS_PROTOCOL], `${presenceUrl()}?token=${good}`);
    // Without the version subprotocol the token is not even read.
    await expectRefused([WS_AUTH_PREFIX + good]);
  });

  it('room sockets are guarded the same way', async () => {
    await expectRefused(asToken(await craft({ claims: { aud: 'x' } })), `${sig.url.replace('http', 'ws')}/v1/rooms/AAAAAAAAAAAAAAAAAAAAAA`);
  });

  it('a plain GET is told to upgrade', async () => {
    const res = await fetch(`${sig.url}/v1/presence`);
    expect(res.status).toBe(426);
  });

  it('left the victim alone: its socket was never replaced and still works', async () => {
    expect(victim.closeCode).toBeNull();
    expect(victim.frames.filter((f) => f.type === 'replaced')).toEqual([]);
    const app = await online(sig.url, await issuer.accessToken({ sub: 'app-1', homes: ['home-1'] }));
    app.send({ type: 'dial', reqId: 'after-auth', to: 'hub-1' });
    const req = await victim.next('request');
    expect(req.from).toBe('app-1');
    victim.send({ type: 'answer', reqId: req.reqId, accept: false });
    expect((await app.next('rejected')).reqId).toBe('after-auth');
    app.close();
  });

  it('a good token is accepted and the server selects only the version subprotocol', async () => {
    const r = await connectRaw(presenceUrl(), asToken(await craft({ claims: { sub: 'app-7' } })));
    expect(r.ok).toBe(true);
    if (r.ok) {
      expect(r.socket.protocol).toBe(WS_PROTOCOL);
      expect((await r.socket.next('hello')).endpointId).toBe('app-7');
      r.socket.close();
    }
  });
});

describe('HS256 only when explicitly enabled', () => {
  it('accepts an HS256 token signed with DEV_HS256_SECRET, still refuses one signed with the public key', async () => {
    const secret = 'dev-only-hs256-secret-0123456789abcdef';
    const dev = await startSignaling({ issuer, vars: { DEV_HS256_SECRET: secret } });
    try {
      const claims = { iss: issuer.issuer, aud: issuer.audience, sub: 'app-9', homes: ['home-1'], nbf: now(), exp: now() + 600 };
      const input = `${b64json({ alg: 'HS256', typ: ACCESS_TOKEN_TYP })}.${b64json(claims)}`;
      const good = `${input}.${await hmac(new TextEncoder().encode(secret), input)}`;
      const r = await connectRaw(`${dev.url.replace('http', 'ws')}/v1/presence`, asToken(good));
      expect(r.ok).toBe(true);
      if (r.ok) r.socket.close();
      const bad = `${input}.${await hmac(new TextEncoder().encode(JSON.stringify(publicJwk)), input)}`;
      const r2 = await connectRaw(`${dev.url.replace('http', 'ws')}/v1/presence`, asToken(bad));
      expect(r2.ok).toBe(false);
      if (!r2.ok) expect(r2.status).toBe(401);
    } finally {
      await dev.close();
    }
  });
});

describe('keys from JWKS_URL', () => {
  it('fetches the issuer keys once, caches them, and still refuses unknown keys', async () => {
    const { createServer } = await import('node:http');
    let fetches = 0;
    const server = createServer((req, res) => {
      fetches++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(issuer.publicJwks));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const remote = await startSignaling({ issuer, vars: { JWKS: '', JWKS_URL: `http://127.0.0.1:${port}/jwks.json` } });
    try {
      const ws = `${remote.url.replace('http', 'ws')}/v1/presence`;
      for (const sub of ['k-app-1', 'k-app-2']) {
        const r = await connectRaw(ws, asToken(await issuer.accessToken({ sub, homes: ['home-1'] })));
        expect(r.ok).toBe(true);
        if (r.ok) r.socket.close();
      }
      expect(fetches).toBe(1);
      // A key the issuer never published: refused, and the cooldown keeps it from refetching in a loop.
      for (let i = 0; i < 3; i++) await expectRefused(asToken(await craft({ signWith: (await generateKeyPair('ES256')).privateKey, header: { kid: 'rotated' } })), ws);
      expect(fetches).toBeLessThanOrEqual(2);
    } finally {
      await remote.close();
      await new Promise((r) => server.close(r));
    }
  });
});
