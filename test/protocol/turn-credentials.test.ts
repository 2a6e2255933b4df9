import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { mintTurnCredential, parseTurnUsername, turnPassword } from '../../protocol/index.js';

describe('TURN REST credentials', () => {
  it('password is base64(HMAC-SHA1(secret, username)), the format coturn use-auth-secret checks', async () => {
    const username = '1700000000:hub-1';
    const expected = createHmac('sha1', 'north').update(username).digest('base64');
    expect(await turnPassword('north', username)).toBe(expected);
  });

  it('mints <expiry>:<id> usernames that parse back', async () => {
    const c = await mintTurnCredential('s3cret', 'app-1', 600, 1_700_000_000.7);
    expect(c.username).toBe('1700000600:app-1');
    expect(parseTurnUsername(c.username)).toEqual({ expiresAt: 1_700_000_600, endpointId: 'app-1' });
  });

  it('rejects usernames not of that exact form', () => {
    for (const u of ['', 'abc', ':x', '12:', '12:a b', '12:a:b', '1'.repeat(13) + ':a', '12:' + 'a'.repeat(129)]) {
      expect(parseTurnUsername(u)).toBeNull();
    }
  });

  it('refuses to mint for an id that is not of the endpoint-id form', async () => {
    await expect(mintTurnCredential('s', 'bad id', 60, 0)).rejects.toThrow(RangeError);
  });
});
