/**
 * `homelink token`: a development access token and identity certificate from the local stack's
 * dev issuer (the one `npm start` configured the worker to trust).
 *
 * Prints the access token on the first line and, unless --no-identity, the identity certificate
 * on the second; the device key it certifies is kept in `<dir>/devices/<sub>.jwk.json`.
 * With --json, one object: { sub, homes, token, certificate, deviceKeyFile, trust }.
 * `npm run token` is this command too (one implementation).
 * Node only.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { createDevIssuer } from '../dev/issuer.js';
import { DEFAULT_DEV_HOME, devDeviceKey, UsageError } from './credentials.js';
import { ENDPOINT_ID_RE } from '../protocol/turn-credentials.js';
import { devDir, readStack } from './stack.js';
import type { Command } from './main.js';

export const tokenCommand: Command = {
  summary: 'Print a development access token (line 1) and identity certificate (line 2) from the local stack\'s dev issuer.',
  usage: `homelink token --sub <id> [--home <home>]... [--ttl SECONDS] [--identity-key FILE] [--no-identity] [--json] [--dir PATH]

  --sub ID        endpoint id the token names
  --home ID       home the endpoint belongs to (repeatable; default ${DEFAULT_DEV_HOME}); endpoints that share a home may connect
  --ttl SECONDS   lifetime of the access token (default 3600)
  --identity-key FILE  certify this device key (a JWK file; only its public half is used) instead
                  of the dev device key kept in <dir>/devices/<sub>.jwk.json
  --no-identity   print only the access token
  --json          one JSON object with token, certificate, key file and the issuer's public keys
  --dir PATH      the local stack's folder (default .dev); works without a running stack too
  --issuer-dir PATH  the dev issuer's key folder (default <dir>/issuer)`,
  options: {
    sub: { type: 'string' },
    home: { type: 'string', multiple: true },
    ttl: { type: 'string' },
    'no-identity': { type: 'boolean' },
    'identity-key': { type: 'string' },
    'issuer-dir': { type: 'string' },
    json: { type: 'boolean' },
    dir: { type: 'string' },
  },
  async run(v) {
    const sub = v['sub'] as string | undefined;
    if (!sub) throw new UsageError('--sub <endpoint id> is required; usage: homelink token --sub app-1 [--home home-1]');
    if (!ENDPOINT_ID_RE.test(sub)) throw new UsageError('--sub must be an endpoint id (letters, digits and ._~-, up to 128)');
    const homes = (v['home'] as string[] | undefined) ?? [DEFAULT_DEV_HOME];
    if (homes.some((h) => !ENDPOINT_ID_RE.test(h))) throw new UsageError('--home must be a home id (letters, digits and ._~-)');
    const ttlRaw = v['ttl'] as string | undefined;
    const ttl = ttlRaw === undefined ? undefined : Number(ttlRaw);
    if (ttl !== undefined && !(Number.isInteger(ttl) && ttl > 0 && ttl <= 366 * 86_400)) throw new UsageError('--ttl must be a whole number of seconds (at most a year)');
    const dir = devDir(v['dir'] as string | undefined);
    // The stack is optional: the issuer key lives in <dir>/issuer whether or not the stack runs.
    const stack = await readStack(dir).catch(() => null);
    const issuer = await createDevIssuer({ dir: (v['issuer-dir'] as string | undefined) ?? stack?.issuerDir ?? join(dir, 'issuer') });
    const token = await issuer.accessToken({ sub, homes, ...(ttl ? { ttlSeconds: ttl } : {}) });
    let certificate: string | null = null;
    let deviceKeyFile: string | null = null;
    const keyFile = v['identity-key'] as string | undefined;
    if (keyFile && !v['no-identity']) {
      let jwk: JWK;
      try {
        jwk = JSON.parse(await readFile(keyFile, 'utf8')) as JWK;
      } catch {
        throw new UsageError(`cannot read the JWK in ${keyFile}: check the path`);
      }
      if (jwk.kty !== 'EC' || jwk.crv !== 'P-256' || typeof jwk.x !== 'string' || typeof jwk.y !== 'string') throw new UsageError(`${keyFile} is not a P-256 (ES256) JWK`);
      // Only the public half is ever certified, even from a private JWK file.
      certificate = await issuer.identityCertificate({ sub, publicJwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } });
      deviceKeyFile = keyFile;
    } else if (!v['no-identity']) {
      deviceKeyFile = join(dir, 'devices', `${sub}.jwk.json`);
      const key = await devDeviceKey(dir, sub);
      certificate = await issuer.identityCertificate({ sub, publicJwk: key.publicJwk });
    }
    if (v['json']) {
      process.stdout.write(
        `${JSON.stringify({
          sub,
          homes,
          token,
          certificate,
          deviceKeyFile,
          trust: { issuer: issuer.issuer, audience: issuer.peerAudience, jwks: issuer.publicJwks },
        })}\n`,
      );
    } else {
      process.stdout.write(`${token}\n${certificate ? `${certificate}\n` : ''}`);
    }
    return 0;
  },
};
