/**
 * The development issuer and `npm run token`: keys persist across restarts, both token types
 * verify with the protocol's own verifiers, and neither passes as the other.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLocalJWKSet, exportJWK, generateKeyPair } from 'jose';
import { createDevIssuer, devWorkerVars, formatDevVars, KEY_FILE } from '../../dev/issuer.js';
import { TokenError, verifyAccessToken, verifyIdentityCertificate } from '../../protocol/tokens.js';
import { loadConfig } from '../../worker/config.js';

const run = promisify(execFile);
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'homelink-issuer-'));
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

describe('createDevIssuer', () => {
  it('persists its key: a second instance trusts the first one\'s tokens', async () => {
    const a = await createDevIssuer({ dir });
    const token = await a.accessToken({ sub: 'app-1', homes: ['home-1'] });
    const b = await createDevIssuer({ dir });
    expect(b.publicJwks).toEqual(a.publicJwks);
    expect(a.publicJwks.keys[0]).not.toHaveProperty('d');
    expect((await stat(join(dir, KEY_FILE))).mode & 0o077).toBe(0);
    const claims = await verifyAccessToken(token, createLocalJWKSet(b.publicJwks), { issuer: b.issuer, audience: b.audience });
    expect(claims).toMatchObject({ sub: 'app-1', homes: ['home-1'] });
  });

  it('signs identity certificates for peers that never pass as access tokens', async () => {
    const issuer = await createDevIssuer();
    const device = await generateKeyPair('ES256', { extractable: true });
    const publicJwk = await exportJWK(device.publicKey);
    const cert = await issuer.identityCertificate({ sub: 'hub-1', publicJwk });
    const keys = createLocalJWKSet(issuer.publicJwks);
    const id = await verifyIdentityCertificate(cert, keys, { issuer: issuer.issuer, audience: issuer.peerAudience });
    expect(id.sub).toBe('hub-1');
    expect(id.jwk).toEqual(publicJwk);
    await expect(verifyAccessToken(cert, keys, { issuer: issuer.issuer, audience: issuer.audience })).rejects.toBeInstanceOf(TokenError);
    const access = await issuer.accessToken({ sub: 'hub-1', homes: [] });
    await expect(verifyIdentityCertificate(access, keys, { issuer: issuer.issuer, audience: issuer.peerAudience })).rejects.toBeInstanceOf(TokenError);
    await expect(issuer.identityCertificate({ sub: 'hub-1', publicJwk: await exportJWK(device.privateKey) })).rejects.toThrow(/public key/);
    await expect(issuer.accessToken({ sub: 'not an id', homes: [] })).rejects.toThrow(/endpoint id/);
  });

  it('devWorkerVars gives a configuration the worker accepts, writable as .dev.vars', async () => {
    const issuer = await createDevIssuer();
    const vars = devWorkerVars(issuer, {
      turnSecret: 'a-local-turn-secret-0123456789',
      relays: [{ id: 'local', region: 'local', lat: 0, lon: 0, host: '127.0.0.1', udpPort: 3478, tcpPort: 3478, tlsPort: 5349 }],
      offlineWaitMs: 2000,
    });
    const config = loadConfig(vars);
    expect(config.issuer).toBe('homelink-dev');
    expect(config.audience).toBe('homelink-signaling');
    expect(config.offlineWaitMs).toBe(2000);
    expect(config.relays).toHaveLength(1);
    const text = formatDevVars(vars);
    expect(text).toContain(`JWKS='${JSON.stringify(issuer.publicJwks)}'`);
  });
});

describe('npm run token', () => {
  it('prints an access token, and a certificate for --identity-key', async () => {
    const device = await generateKeyPair('ES256', { extractable: true });
    const keyFile = join(dir, 'device.jwk.json');
    // A private JWK file: only its public half may end up in the certificate.
    await writeFile(keyFile, JSON.stringify(await exportJWK(device.privateKey)));
    const { stdout } = await run('npx', ['tsx', 'scripts/token.ts', '--dir', dir, '--sub', 'app-1', '--home', 'home-1', '--home', 'home-2', '--identity-key', keyFile], {
      timeout: 60_000,
    });
    const [token, cert] = stdout.trim().split('\n');
    const issuer = await createDevIssuer({ dir });
    const keys = createLocalJWKSet(issuer.publicJwks);
    expect(await verifyAccessToken(token!, keys, { issuer: issuer.issuer, audience: issuer.audience })).toMatchObject({ sub: 'app-1', homes: ['home-1', 'home-2'] });
    const id = await verifyIdentityCertificate(cert!, keys, { issuer: issuer.issuer, audience: issuer.peerAudience });
    expect(id.jwk).toEqual(await exportJWK(device.publicKey));
    expect(JSON.parse(await readFile(keyFile, 'utf8'))).toHaveProperty('d');
  });

  it('refuses a missing --sub with usage and exit code 2', async () => {
    const r = await run('npx', ['tsx', 'scripts/token.ts', '--dir', dir], { timeout: 60_000 }).catch((e: { code: number; stderr: string }) => e);
    expect((r as { code: number }).code).toBe(2);
    expect((r as { stderr: string }).stderr).toContain('usage');
  });
});
