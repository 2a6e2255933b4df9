/**
 * Prints a development access token (and, with --identity-key, an identity certificate) signed by
 * the persisted dev issuer in .dev/issuer, the one `npm start` configures the worker to trust.
 *
 *   npm run token -- --sub app-1 --home home-1 [--home home-2] [--ttl 3600] [--identity-key device.jwk.json]
 *
 * Output: the access token on the first line; with --identity-key, the certificate on the second.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { JWK } from 'jose';
import { createDevIssuer } from '../dev/issuer.js';

/** Where `npm start` and this script keep the dev signing key (git-ignored). */
export const DEV_ISSUER_DIR = '.dev/issuer';

const USAGE = 'usage: npm run token -- --sub <endpoint id> --home <home id> [--home ...] [--ttl seconds] [--identity-key <public jwk file>]';

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        sub: { type: 'string' },
        home: { type: 'string', multiple: true },
        ttl: { type: 'string' },
        'identity-key': { type: 'string' },
        dir: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help || !values.sub) {
    process.stderr.write(`${USAGE}\n`);
    return values.help ? 0 : 2;
  }
  const ttl = values.ttl === undefined ? undefined : Number(values.ttl);
  if (ttl !== undefined && !(Number.isInteger(ttl) && ttl > 0)) {
    process.stderr.write(`--ttl must be a positive integer\n${USAGE}\n`);
    return 2;
  }
  const issuer = await createDevIssuer({ dir: values.dir ?? DEV_ISSUER_DIR });
  const token = await issuer.accessToken({ sub: values.sub, homes: values.home ?? [], ...(ttl ? { ttlSeconds: ttl } : {}) });
  process.stdout.write(`${token}\n`);
  const keyFile = values['identity-key'];
  if (keyFile) {
    const jwk = JSON.parse(await readFile(keyFile, 'utf8')) as JWK;
    // Accept a private JWK file too, but only ever certify its public half.
    const { d: _d, ...publicJwk } = jwk;
    process.stdout.write(`${await issuer.identityCertificate({ sub: values.sub, publicJwk })}\n`);
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`token: ${(e as Error).name}: ${(e as Error).message}\n`);
    process.exit(1);
  },
);
