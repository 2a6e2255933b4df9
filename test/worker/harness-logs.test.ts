/**
 * The test harness's log capture (test/support/signaling.ts `onOutput`): suites that assert on
 * the service's logs see its console lines and its uncaught exceptions, not only the former.
 * Miniflare 5 keeps uncaught exceptions out of the structured logs unless workerd is verbose, so
 * a harness that lost them would let "no uncaught error" assertions pass without looking.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';

/** A stand-in bundle: the two object classes the bindings name, and a fetch that logs and throws. */
const BUNDLE = `
import { DurableObject } from 'cloudflare:workers';
export class Presence extends DurableObject {}
export class Room extends DurableObject {}
export default {
  fetch(req, env, ctx) {
    console.log('harness-probe console line');
    ctx.waitUntil(Promise.reject(new Error('harness-probe rejected')));
    if (new URL(req.url).pathname === '/throw') throw new Error('harness-probe thrown');
    return new Response('ok');
  },
};`;

describe('harness log capture', () => {
  const lines: string[] = [];
  let sig: SignalingHandle;
  beforeAll(async () => {
    sig = await startSignaling({ bundle: BUNDLE, onOutput: (l) => lines.push(l) });
  });
  afterAll(async () => {
    await sig?.close();
  });

  it('hands onOutput console lines and uncaught exceptions, thrown or rejected', async () => {
    expect(await (await fetch(`${sig.url}/`)).text()).toBe('ok');
    expect((await fetch(`${sig.url}/throw`, { headers: { accept: 'application/json' } })).status).toBe(500);
    const seen = (s: string): boolean => lines.some((l) => l.includes(s));
    const end = Date.now() + 5000;
    while (!(seen('harness-probe thrown') && seen('harness-probe rejected')) && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    expect(seen('harness-probe console line')).toBe(true);
    expect(seen('harness-probe rejected')).toBe(true);
    expect(seen('harness-probe thrown')).toBe(true);
  });
});
