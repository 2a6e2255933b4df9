/**
 * Authorization from signed claims only: endpoints whose `homes` intersect may connect; a
 * forbidden target answers exactly like an unknown one; nobody outside the pair reaches its room.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSignaling, type SignalingHandle } from '../support/signaling.js';
import { connect, online, type Frame, type TestSocket } from './helpers.js';

let sig: SignalingHandle;

beforeAll(async () => {
  sig = await startSignaling({ offlineWaitMs: 600 });
});
afterAll(async () => sig?.close());

const token = (sub: string, homes: string[]): Promise<string> => sig.issuer.accessToken({ sub, homes });
const close = (...s: TestSocket[]): void => s.forEach((x) => x.close());

/** What a dial answered, minus the caller's own reqId. */
const verdict = (f: Frame): Frame => ({ ...f, reqId: '<reqId>' });

describe('who may reach whom', () => {
  it('a forbidden target and an unknown one get the same answer; the forbidden one hears nothing', async () => {
    const app = await online(sig.url, await token('z-app', ['home-a']));
    const stranger = await online(sig.url, await token('z-hub-b', ['home-b']));
    app.send({ type: 'dial', reqId: 'forbidden', to: 'z-hub-b' });
    app.send({ type: 'dial', reqId: 'unknown', to: 'z-nobody' });
    const a = await app.next('dial_failed');
    const b = await app.next('dial_failed');
    const byId = Object.fromEntries([a, b].map((f) => [f.reqId as string, f]));
    expect(verdict(byId['forbidden']!)).toEqual(verdict(byId['unknown']!));
    expect(byId['forbidden']).toEqual({ type: 'dial_failed', reqId: 'forbidden', code: 'peer_offline' });
    // The frames the app saw carry nothing else either.
    expect(app.frames).toEqual([]);
    expect(stranger.frames).toEqual([]);
    close(app, stranger);
  });

  it('a shared home is enough, whichever side lists more', async () => {
    const app = await online(sig.url, await token('y-app', ['home-x']));
    const hub = await online(sig.url, await token('y-hub', ['home-q', 'home-x', 'home-r']));
    app.send({ type: 'dial', reqId: 'ok', to: 'y-hub' });
    expect((await hub.next('request')).from).toBe('y-app');
    close(app, hub);
  });

  it('an endpoint with no homes reaches nobody and is reached by nobody', async () => {
    const lonely = await online(sig.url, await token('x-lonely', []));
    const hub = await online(sig.url, await token('x-hub', ['home-1']));
    lonely.send({ type: 'dial', reqId: 'l', to: 'x-hub' });
    expect(await lonely.next('dial_failed')).toMatchObject({ code: 'peer_offline' });
    hub.send({ type: 'dial', reqId: 'h', to: 'x-lonely' });
    expect(await hub.next('dial_failed')).toMatchObject({ code: 'peer_offline' });
    expect(lonely.frames).toEqual([]);
    expect(hub.frames).toEqual([]);
    close(lonely, hub);
  });

  it('a request held for an offline target is not delivered when it comes back with other homes', async () => {
    const app = await online(sig.url, await token('w-app', ['home-1']));
    app.send({ type: 'dial', reqId: 'held', to: 'w-hub' });
    const hub = await online(sig.url, await token('w-hub', ['home-2']));
    expect(await app.next('dial_failed')).toMatchObject({ reqId: 'held', code: 'peer_offline' });
    expect(hub.frames).toEqual([]);
    close(app, hub);
  });
});

describe('rooms belong to their pair', () => {
  it('a third endpoint, even from the same home, cannot join or write into the room', async () => {
    const at = await token('v-app', ['home-1']);
    const ht = await token('v-hub', ['home-1']);
    const ct = await token('v-intruder', ['home-1']);
    const app = await online(sig.url, at);
    const hub = await online(sig.url, ht);
    app.send({ type: 'dial', reqId: 'r', to: 'v-hub' });
    const req = await hub.next('request');
    // The intruder learns the session id (the worst case) and tries to answer and to join.
    const intruderPresence = await online(sig.url, ct);
    intruderPresence.send({ type: 'answer', reqId: req.reqId, accept: true });
    expect(await intruderPresence.next('error')).toMatchObject({ code: 'out_of_state' });
    hub.send({ type: 'answer', reqId: req.reqId, accept: true });
    const s = await app.next('session');
    await hub.next('session');
    const ra = await connect(sig.url, `/v1/rooms/${s.sessionId}`, at);
    await ra.next('joined');
    const rb = await connect(sig.url, `/v1/rooms/${s.sessionId}`, ht);
    await rb.next('joined');
    await ra.next('peer_joined');

    const intruder = await connect(sig.url, `/v1/rooms/${s.sessionId}`, ct);
    intruder.send({ type: 'signal', data: { kind: 'offer', sdp: 'evil' } });
    expect(await intruder.closed()).toBe(1008);
    expect(intruder.frames).toEqual([]);

    // The pair's exchange is undisturbed: numbering starts at 1, nobody left or joined.
    ra.send({ type: 'signal', data: { kind: 'offer', sdp: 'good' } });
    expect(await rb.next('signal')).toEqual({ type: 'signal', seq: 1, data: { kind: 'offer', sdp: 'good' } });
    expect(ra.frames).toEqual([]);
    expect(rb.frames).toEqual([]);
    close(ra, rb, app, hub, intruderPresence);
  });

  it('an unknown session and a malformed session id look the same as a foreign one', async () => {
    const t = await token('u-app', ['home-1']);
    for (const id of ['AAAAAAAAAAAAAAAAAAAAAA', 'short', 'x'.repeat(65)]) {
      const s = await connect(sig.url, `/v1/rooms/${id}`, t);
      expect(await s.closed()).toBe(1008);
      expect(s.frames).toEqual([]);
    }
  });
});
