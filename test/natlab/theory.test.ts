/**
 * The expectations the matrix asserts, checked on their own (no namespaces needed): which
 * pairs theory says can go direct, and that the rule sets carry the pieces each behaviour
 * depends on.
 */
import { describe, expect, it } from 'vitest';
import { matrixCells } from './cells.js';
import { directPossible, NAT_BEHAVIOURS, routerRuleset } from './nat.js';

describe('NAT theory behind the matrix', () => {
  it('relayed only for symmetric vs symmetric, symmetric vs port-restricted, and the UDP-blocked firewall (issue 5)', () => {
    const relayed = matrixCells()
      .filter((c) => c.expected === 'relay')
      .map((c) => [c.dialer, c.answerer].sort().join(' + '));
    const allowed = new Set(['symmetric + symmetric', 'port-restricted + symmetric']);
    for (const pair of relayed) expect(allowed.has(pair) || pair.includes('udp-blocked'), pair).toBe(true);
    expect(relayed).toContain('symmetric + symmetric');
    expect(relayed).toContain('port-restricted + symmetric');
  });

  it('direct whenever one side maps endpoint-independently and both filters can be opened', () => {
    expect(directPossible('full-cone', 'symmetric')).toBe(true);
    expect(directPossible('address-restricted', 'symmetric')).toBe(true);
    expect(directPossible('port-restricted', 'port-restricted')).toBe(true);
    expect(directPossible('symmetric', null)).toBe(true);
    expect(directPossible('udp-blocked', null)).toBe(false);
    for (const b of NAT_BEHAVIOURS) expect(directPossible(b, 'udp-blocked')).toBe(false);
  });

  it('covers every ordered pair, the public side, and one same-LAN cell per behaviour', () => {
    const cells = matrixCells();
    expect(cells.filter((c) => !c.sameLan)).toHaveLength(36);
    expect(cells.filter((c) => c.sameLan).map((c) => c.dialer)).toEqual([...NAT_BEHAVIOURS]);
    expect(new Set(cells.map((c) => c.id)).size).toBe(cells.length);
  });

  it('rule sets: unsolicited WAN packets dropped in INPUT everywhere; the mapping and filtering pieces per behaviour', () => {
    for (const b of NAT_BEHAVIOURS) {
      const r = routerRuleset(b);
      expect(r, b).toMatch(/iifname "wan0" ct state established,related accept\n\s+iifname "wan0" drop/);
      expect(r, b).toMatch(/chain forward \{\n\s+type filter hook forward priority filter; policy drop;/);
    }
    expect(routerRuleset('symmetric')).toContain('masquerade fully-random');
    expect(routerRuleset('port-restricted')).not.toContain('fully-random');
    expect(routerRuleset('full-cone')).toContain('dnat ip to udp dport map @eif');
    expect(routerRuleset('address-restricted')).toContain('ip saddr . udp dport @seen dnat');
    expect(routerRuleset('port-restricted')).not.toContain('dnat');
    expect(routerRuleset('udp-blocked')).toMatch(/tcp dport 443 accept\n\s+iifname "lan0" oifname "wan0" drop/);
  });
});
