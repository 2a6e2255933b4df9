/**
 * The pure parts of the service on virtual time, no sockets: room rules, presence expiry,
 * the rate limiter, relay choice and the configuration schema.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { RATE_LIMIT, type SignalData } from '../../protocol/messages.js';
import { ConfigError, loadConfig, parseRelays, type RelayEntry, type WorkerVars } from '../../worker/config.js';
import { chooseRelays, iceServersFor, locationFromCf } from '../../worker/ice.js';
import {
  dialOutcome,
  emptyPresence,
  incomingExpired,
  mayConnect,
  nextWake,
  randomId,
  step as presenceStep,
  wakeOf,
  type Dial,
  type Incoming,
  type PresenceAction,
  type PresenceEvent,
  type PresenceState,
} from '../../worker/presence-rules.js';
import { fullBucket, take } from '../../worker/rate-limit.js';
import { emptyRoom, MAX_BUFFERED_SIGNALS, SEQ_LEASE, seqLease, step, type RoomEvent, type RoomMeta, type RoomState } from '../../worker/room-rules.js';

const GRACE = 15_000;
const META: RoomMeta = { sessionId: 'S'.repeat(22), initiator: 'app', responder: 'hub', deadline: 600_000 };
const offer: SignalData = { kind: 'offer', sdp: 'v=0' };
const cand = (i: number): SignalData => ({ kind: 'candidate', candidate: `candidate:${i}` });

const init = (): RoomState => step(emptyRoom(), { type: 'init', meta: META, now: 0 }, GRACE).state;

describe('room rules', () => {
  it('init arms the alarm for the join grace, and is idempotent', () => {
    const r = step(emptyRoom(), { type: 'init', meta: META, now: 1000 }, GRACE);
    expect(r.actions).toEqual([{ type: 'persist' }, { type: 'set_alarm', at: 1000 + GRACE }]);
    expect(step(r.state, { type: 'init', meta: META, now: 2000 }, GRACE).actions).toEqual([]);
    const other = step(r.state, { type: 'init', meta: { ...META, responder: 'evil' }, now: 2000 }, GRACE);
    expect(other.state).toBe(r.state);
    expect(other.actions[0]).toMatchObject({ type: 'error', code: 'out_of_state' });
  });

  it('a stranger is closed with 1008 and changes nothing', () => {
    const s = init();
    for (const type of ['join', 'message'] as const) {
      const ev =
        type === 'join'
          ? { type, endpoint: 'eve', present: ['app'], now: 1 }
          : { type, endpoint: 'eve', message: { type: 'signal' as const, data: offer }, present: ['app'], now: 1 };
      const r = step(s, ev, GRACE);
      expect(r.state).toBe(s);
      expect(r.actions).toEqual([{ type: 'close', to: null, code: 1008, reason: 'not a member of this session' }]);
    }
  });

  it('relays in order with per-recipient seq, buffers while the peer is away, flushes on join', () => {
    let s = init();
    s = step(s, { type: 'join', endpoint: 'app', present: ['app'], now: 1 }, GRACE).state;
    const sent: unknown[] = [];
    for (const data of [offer, cand(1), cand(2)]) {
      const r = step(s, { type: 'message', endpoint: 'app', message: { type: 'signal', data }, present: ['app'], now: 2 }, GRACE);
      expect(r.actions.filter((a) => a.type === 'send')).toEqual([]);
      s = r.state;
    }
    expect(s.buffer['hub']!.map((b) => b.seq)).toEqual([1, 2, 3]);
    const j = step(s, { type: 'join', endpoint: 'hub', present: ['app', 'hub'], now: 3 }, GRACE);
    for (const a of j.actions) if (a.type === 'send' || a.type === 'send_joined') sent.push(a.type === 'send' ? a.message : 'joined');
    expect(sent).toEqual([
      'joined',
      { type: 'signal', seq: 1, data: offer },
      { type: 'signal', seq: 2, data: cand(1) },
      { type: 'signal', seq: 3, data: cand(2) },
      { type: 'peer_joined' },
    ]);
    expect(j.state.buffer['hub']).toEqual([]);
    const live = step(j.state, { type: 'message', endpoint: 'app', message: { type: 'signal', data: cand(3) }, present: ['app', 'hub'], now: 4 }, GRACE);
    expect(live.actions[0]).toEqual({ type: 'send', to: 'hub', message: { type: 'signal', seq: 4, data: cand(3) } });
    const back = step(live.state, { type: 'message', endpoint: 'hub', message: { type: 'signal', data: offer }, present: ['app', 'hub'], now: 5 }, GRACE);
    expect(back.actions[0]).toEqual({ type: 'send', to: 'app', message: { type: 'signal', seq: 1, data: offer } });
  });

  it('the buffer is bounded: beyond it the sender gets rate_limited and the state is unchanged', () => {
    let s = init();
    for (let i = 0; i < MAX_BUFFERED_SIGNALS; i++) {
      s = step(s, { type: 'message', endpoint: 'app', message: { type: 'signal', data: cand(i) }, present: ['app'], now: 1 }, GRACE).state;
    }
    const r = step(s, { type: 'message', endpoint: 'app', message: { type: 'signal', data: cand(-1) }, present: ['app'], now: 1 }, GRACE);
    expect(r.state).toBe(s);
    expect(r.actions).toEqual([{ type: 'error', code: 'rate_limited', message: 'peer has not joined and its buffer is full' }]);
  });

  it('bye ends the room for both; later joins only hear why', () => {
    let s = init();
    const present = ['app', 'hub'];
    const r = step(s, { type: 'message', endpoint: 'hub', message: { type: 'signal', data: { kind: 'bye' } }, present, now: 10 }, GRACE);
    s = r.state;
    expect(s.ended).toBe('bye');
    expect(r.actions.filter((a) => a.type === 'close').map((a) => a.type === 'close' && a.to)).toEqual(['app', 'hub']);
    const again = step(s, { type: 'join', endpoint: 'app', present: ['app'], now: 11 }, GRACE);
    expect(again.actions[0]).toEqual({ type: 'send', to: 'app', message: { type: 'closed', reason: 'bye' } });
    const late = step(s, { type: 'message', endpoint: 'app', message: { type: 'ice_servers' }, present: ['app'], now: 11 }, GRACE);
    expect(late.actions[0]).toMatchObject({ type: 'error', code: 'out_of_state' });
  });

  it('renew: only with both sides fresh, never after the end, never shortening; a stranger is closed', () => {
    const s = init();
    const TTL = 600_000;
    const renew = (over: Partial<{ endpoint: string; fresh: string[]; now: number }>, st: RoomState = s) =>
      step(st, { type: 'renew', endpoint: 'app', fresh: ['app', 'hub'], present: ['app', 'hub'], ttlMs: TTL, now: 100_000, ...over }, GRACE);
    const ok = renew({});
    expect(ok.state.meta?.deadline).toBe(700_000);
    expect(ok.actions).toEqual([
      { type: 'persist' },
      { type: 'set_alarm', at: 700_000 },
      { type: 'send_renewed', to: 'app', deadline: 700_000 },
      { type: 'send_renewed', to: 'hub', deadline: 700_000 },
    ]);
    // A later renewal from the other side moves it on; an earlier clock never shortens it.
    expect(renew({ endpoint: 'hub', now: 200_000 }, ok.state).state.meta?.deadline).toBe(800_000);
    expect(renew({ now: 50_000 }, ok.state).state.meta?.deadline).toBe(700_000);
    // The peer away, or its token expired (not fresh): refused, nothing changes.
    for (const fresh of [['app'], ['hub'], []]) {
      const r = renew({ fresh });
      expect(r.state).toBe(s);
      expect(r.actions).toEqual([{ type: 'error', code: 'out_of_state', message: 'renewal needs both sides connected' }]);
    }
    // At or past the deadline it ends the room (see 'past the deadline'); after bye: too late.
    expect(renew({ now: META.deadline }).actions.at(-1)).toEqual({ type: 'delete' });
    const ended = step(s, { type: 'message', endpoint: 'hub', message: { type: 'signal', data: { kind: 'bye' } }, present: ['app', 'hub'], now: 10 }, GRACE).state;
    expect(renew({}, ended).actions).toEqual([{ type: 'error', code: 'out_of_state', message: 'room has closed' }]);
    const stranger = renew({ endpoint: 'eve', fresh: ['app', 'hub', 'eve'] });
    expect(stranger.state).toBe(s);
    expect(stranger.actions).toEqual([{ type: 'close', to: null, code: 1008, reason: 'not a member of this session' }]);
  });

  it('alarms: deletes an empty room after the grace, closes at the deadline, otherwise waits for the deadline', () => {
    const s = init();
    expect(step(s, { type: 'alarm', present: [], now: GRACE }, GRACE).actions).toEqual([{ type: 'delete' }]);
    expect(step(s, { type: 'alarm', present: ['app'], now: GRACE }, GRACE).actions).toEqual([{ type: 'set_alarm', at: META.deadline }]);
    const end = step(s, { type: 'alarm', present: ['app'], now: META.deadline }, GRACE);
    expect(end.actions).toEqual([
      { type: 'send', to: 'app', message: { type: 'closed', reason: 'deadline' } },
      { type: 'close', to: 'app', code: 1000, reason: 'deadline' },
      { type: 'delete' },
    ]);
    const left = step(s, { type: 'leave', endpoint: 'hub', present: ['app'], now: 50 }, GRACE);
    // The leaver's seq counter (kept on its socket) is handed to the driver to keep.
    expect(left.actions).toEqual([
      { type: 'send', to: 'app', message: { type: 'peer_left' } },
      { type: 'persist' },
      { type: 'set_alarm', at: META.deadline },
    ]);
    const empty = step(s, { type: 'leave', endpoint: 'hub', present: [], now: 50 }, GRACE);
    expect(empty.actions).toEqual([{ type: 'persist' }, { type: 'set_alarm', at: 50 + GRACE }]);
    // A second socket of the same side still there: nothing to keep.
    expect(step(s, { type: 'leave', endpoint: 'hub', present: ['hub', 'app'], now: 50 }, GRACE).actions).toEqual([
      { type: 'set_alarm', at: META.deadline },
    ]);
  });

  it('past the deadline, any event of a member ends the room as the deadline alarm would (a room without an alarm)', () => {
    let s = init();
    s = step(s, { type: 'join', endpoint: 'app', present: ['app'], now: 1 }, GRACE).state;
    s = step(s, { type: 'join', endpoint: 'hub', present: ['app', 'hub'], now: 2 }, GRACE).state;
    const expired = [
      { type: 'send', to: 'app', message: { type: 'closed', reason: 'deadline' } },
      { type: 'close', to: 'app', code: 1000, reason: 'deadline' },
      { type: 'send', to: 'hub', message: { type: 'closed', reason: 'deadline' } },
      { type: 'close', to: 'hub', code: 1000, reason: 'deadline' },
      { type: 'delete' },
    ];
    const now = META.deadline;
    const events: RoomEvent[] = [
      { type: 'message', endpoint: 'app', message: { type: 'signal', data: { kind: 'offer', sdp: 'o' } }, present: ['app', 'hub'], now },
      { type: 'message', endpoint: 'hub', message: { type: 'ice_servers' }, present: ['app', 'hub'], now },
      { type: 'renew', endpoint: 'app', fresh: ['app', 'hub'], present: ['app', 'hub'], ttlMs: 600_000, now },
      // A side's new socket (it replaces the old one): everyone present hears it.
      { type: 'join', endpoint: 'hub', present: ['app', 'hub'], now },
    ];
    for (const ev of events) {
      const r = step(s, ev, GRACE);
      // Nothing relayed, no credentials minted, no renewal: closed, and the room deleted.
      expect(r.actions).toEqual(expired);
      expect(r.state.meta).toBeNull();
    }
    // A leave tells whoever is still there.
    expect(step(s, { type: 'leave', endpoint: 'hub', present: ['app'], now }, GRACE).actions).toEqual([...expired.slice(0, 2), { type: 'delete' }]);
    // One moment before, the same signal is relayed.
    expect(step(s, { ...events[0], now: now - 1 } as RoomEvent, GRACE).actions[0]).toMatchObject({ type: 'send', to: 'hub', message: { type: 'signal' } });
    // A stranger's event changes nothing, past the deadline or not.
    const stranger = step(s, { type: 'join', endpoint: 'eve', present: ['app', 'hub', 'eve'], now }, GRACE);
    expect(stranger.state).toBe(s);
    expect(stranger.actions).toEqual([{ type: 'close', to: null, code: 1008, reason: 'not a member of this session' }]);
    // After bye, the end's reason stays the one they were told.
    const ended = step(s, { type: 'message', endpoint: 'hub', message: { type: 'signal', data: { kind: 'bye' } }, present: ['app'], now: 10 }, GRACE).state;
    expect(step(ended, { type: 'join', endpoint: 'hub', present: ['app', 'hub'], now }, GRACE).actions[0]).toEqual({ type: 'send', to: 'app', message: { type: 'closed', reason: 'bye' } });
  });

  it('an alarm that fires before the grace of the last leave re-arms instead of deleting (the driver moves alarms only earlier)', () => {
    // Created at 0 (alarm at GRACE), both join, both leave at GRACE - 10: the driver keeps the
    // earlier alarm, which must not delete a room that has been empty for 10 ms.
    let s = init();
    s = step(s, { type: 'join', endpoint: 'app', present: ['app'], now: 1 }, GRACE).state;
    s = step(s, { type: 'join', endpoint: 'hub', present: ['app', 'hub'], now: 2 }, GRACE).state;
    s = step(s, { type: 'leave', endpoint: 'hub', present: ['app'], now: GRACE - 20 }, GRACE).state;
    const left = step(s, { type: 'leave', endpoint: 'app', present: [], now: GRACE - 10 }, GRACE);
    expect(left.actions.at(-1)).toEqual({ type: 'set_alarm', at: 2 * GRACE - 10 });
    const early = step(left.state, { type: 'alarm', present: [], now: GRACE }, GRACE);
    expect(early.actions).toEqual([{ type: 'set_alarm', at: 2 * GRACE - 10 }]);
    expect(early.state.meta).toEqual(META);
    expect(step(early.state, { type: 'alarm', present: [], now: 2 * GRACE - 10 }, GRACE).actions).toEqual([{ type: 'delete' }]);
    // A rebuilt instance does not know when the room emptied: it waits one grace from now.
    const rebuilt: RoomState = { meta: META, ended: null, nextSeq: left.state.nextSeq, buffer: left.state.buffer };
    const late = step(rebuilt, { type: 'alarm', present: [], now: GRACE }, GRACE);
    expect(late.actions).toEqual([{ type: 'set_alarm', at: 2 * GRACE }]);
    expect(step(late.state, { type: 'alarm', present: [], now: 2 * GRACE }, GRACE).actions).toEqual([{ type: 'delete' }]);
    // Someone back in the room: the early alarm waits for the deadline.
    const back = step(left.state, { type: 'join', endpoint: 'app', present: ['app'], now: GRACE - 5 }, GRACE).state;
    expect(step(back, { type: 'alarm', present: ['app'], now: GRACE }, GRACE).actions).toEqual([{ type: 'set_alarm', at: META.deadline }]);
  });

  it('bye: with both sides told, any alarm deletes; with a side away, the room waits a grace for its rejoin', () => {
    let s = init();
    s = step(s, { type: 'join', endpoint: 'app', present: ['app'], now: 1 }, GRACE).state;
    const both = step(step(s, { type: 'join', endpoint: 'hub', present: ['app', 'hub'], now: 2 }, GRACE).state, {
      type: 'message', endpoint: 'app', message: { type: 'signal', data: { kind: 'bye' } }, present: ['app', 'hub'], now: GRACE - 10,
    }, GRACE);
    expect(step(both.state, { type: 'alarm', present: [], now: GRACE }, GRACE).actions).toEqual([{ type: 'delete' }]);
    const away = step(s, { type: 'message', endpoint: 'app', message: { type: 'signal', data: { kind: 'bye' } }, present: ['app'], now: GRACE - 10 }, GRACE);
    expect(away.actions).toContainEqual({ type: 'persist' });
    expect(step(away.state, { type: 'alarm', present: [], now: GRACE }, GRACE).actions).toEqual([{ type: 'set_alarm', at: 2 * GRACE - 10 }]);
    const rejoin = step(away.state, { type: 'join', endpoint: 'hub', present: ['hub'], now: GRACE + 1 }, GRACE);
    // The bye it missed first (it says why), then the end.
    expect(rejoin.actions.slice(0, 2)).toEqual([
      { type: 'send', to: 'hub', message: { type: 'signal', seq: 1, data: { kind: 'bye' } } },
      { type: 'send', to: 'hub', message: { type: 'closed', reason: 'bye' } },
    ]);
  });

  it('a side that joins after the peer gave up hears the peer\'s bye and its reason, not the offer before it', () => {
    let s = init();
    s = step(s, { type: 'join', endpoint: 'app', present: ['app'], now: 1 }, GRACE).state;
    const offer = { kind: 'offer', sdp: 'v=0' } as const;
    s = step(s, { type: 'message', endpoint: 'app', message: { type: 'signal', data: offer }, present: ['app'], now: 2 }, GRACE).state;
    const bye = { kind: 'bye', reason: 'Timeout' } as const;
    s = step(s, { type: 'message', endpoint: 'app', message: { type: 'signal', data: bye }, present: ['app'], now: 3 }, GRACE).state;
    const join = step(s, { type: 'join', endpoint: 'hub', present: ['app', 'hub'], now: 4 }, GRACE);
    expect(join.state).toBe(s);
    expect(join.actions).toEqual([
      { type: 'send', to: 'hub', message: { type: 'signal', seq: 2, data: bye } },
      { type: 'send', to: 'hub', message: { type: 'closed', reason: 'bye' } },
      { type: 'close', to: 'hub', code: expect.any(Number), reason: 'room closed' },
    ]);
  });

  it('seq lease: reserved a block at a time after the first signal; a counter at or below the lease needs no write', () => {
    // A join writes the exact counter (nothing sent: 1); the first signal reserves a block.
    expect(seqLease(2, 1)).toBe(1 + SEQ_LEASE);
    for (let next = 2; next <= 1 + SEQ_LEASE; next++) expect(seqLease(next, 1 + SEQ_LEASE)).toBeNull();
    expect(seqLease(2 + SEQ_LEASE, 1 + SEQ_LEASE)).toBe(1 + 2 * SEQ_LEASE);
    // No lease yet (an attachment without one): write.
    expect(seqLease(1, undefined)).toBe(SEQ_LEASE);
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1_000_000 }), fc.integer({ min: 1, max: 1_000_000 }), (next, leased) => {
        const l = seqLease(next, leased);
        // Never lets a seq already handed out (below `next`) reach or pass the lease.
        if (l === null) expect(next).toBeLessThanOrEqual(leased);
        else expect(l).toBeGreaterThanOrEqual(next);
      }),
    );
  });

  it('property: whatever the interleaving, each side receives its signals once, in order, numbered 1..n', () => {
    type Op = { kind: 'send'; from: 'app' | 'hub' } | { kind: 'toggle'; who: 'app' | 'hub' };
    const op = fc.oneof(
      fc.record({ kind: fc.constant('send' as const), from: fc.constantFrom('app' as const, 'hub' as const) }),
      fc.record({ kind: fc.constant('toggle' as const), who: fc.constantFrom('app' as const, 'hub' as const) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops: Op[]) => {
        let s = init();
        const present = new Set<string>();
        const got: Record<string, number[]> = { app: [], hub: [] };
        const sentCount: Record<string, number> = { app: 0, hub: 0 };
        const collect = (actions: ReturnType<typeof step>['actions']): void => {
          for (const a of actions) if (a.type === 'send' && a.message.type === 'signal') got[a.to]!.push(a.message.seq);
        };
        for (const o of ops) {
          if (o.kind === 'toggle') {
            if (present.has(o.who)) {
              present.delete(o.who);
              const r = step(s, { type: 'leave', endpoint: o.who, present: [...present], now: 1 }, GRACE);
              s = r.state;
            } else {
              present.add(o.who);
              const r = step(s, { type: 'join', endpoint: o.who, present: [...present], now: 1 }, GRACE);
              s = r.state;
              collect(r.actions);
            }
          } else if (present.has(o.from)) {
            const r = step(s, { type: 'message', endpoint: o.from, message: { type: 'signal', data: cand(1) }, present: [...present], now: 1 }, GRACE);
            s = r.state;
            sentCount[o.from === 'app' ? 'hub' : 'app']!++;
            collect(r.actions);
          }
        }
        for (const who of ['app', 'hub']) {
          if (!present.has(who)) {
            const r = step(s, { type: 'join', endpoint: who, present: [...present, who], now: 1 }, GRACE);
            s = r.state;
            collect(r.actions);
            present.add(who);
          }
          expect(got[who]).toEqual(Array.from({ length: sentCount[who]! }, (_, i) => i + 1));
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('presence rules', () => {
  const dial: Dial = { reqId: 'r', to: 'hub', sessionId: 's', ringing: false, offlineAt: 1000, timeoutAt: 5000 };
  it('a dial fails peer_offline at offlineAt unless ringing, timeout at timeoutAt', () => {
    expect(dialOutcome(dial, 999)).toBeNull();
    expect(dialOutcome(dial, 1000)).toBe('peer_offline');
    expect(dialOutcome({ ...dial, ringing: true }, 1000)).toBeNull();
    expect(dialOutcome({ ...dial, ringing: true }, 5000)).toBe('timeout');
  });
  it('incoming records expire with their dial; the next wake is the earliest deadline', () => {
    const inc: Incoming = { reqId: 'i', from: 'app', fromHomes: ['h'], initiatorReqId: 'r', sessionId: 's', delivered: false, offlineAt: 1000, timeoutAt: 5000 };
    expect(incomingExpired(inc, 1000)).toBe(true);
    expect(incomingExpired({ ...inc, delivered: true }, 1000)).toBe(false);
    expect(nextWake([dial], [])).toBe(1000);
    expect(nextWake([{ ...dial, ringing: true }], [{ ...inc, delivered: true }])).toBe(5000);
    expect(nextWake([], [])).toBeNull();
    // The current socket turning stale counts too.
    expect(wakeOf(emptyPresence(), 7000)).toBe(7000);
    expect(wakeOf({ dials: { [dial.reqId]: dial }, incoming: {} }, 7000)).toBe(1000);
  });
  it('homes must intersect', () => {
    expect(mayConnect(['a', 'b'], ['b'])).toBe(true);
    expect(mayConnect(['a'], ['b'])).toBe(false);
    expect(mayConnect([], [])).toBe(false);
  });
  it('random ids are session ids', () => {
    const id = randomId((n) => crypto.getRandomValues(new Uint8Array(n)));
    expect(id).toMatch(/^[A-Za-z0-9_-]{22}$/);
  });
});

describe('presence machine on virtual time', () => {
  const CFG = { offlineWaitMs: 3000, requestTimeoutMs: 30_000, sessionTtlMs: 600_000, ackDeadlineMs: 5000 };
  const app = { sub: 'app', homes: ['home-1'] };
  const hub = { sub: 'hub', homes: ['home-1', 'home-2'] };
  const stranger = { sub: 'hub', homes: ['home-9'] };
  const SID = 'S'.repeat(22);
  const run = (s: PresenceState, ...evs: PresenceEvent[]): { state: PresenceState; actions: PresenceAction[]; replies: unknown[] } => {
    const actions: PresenceAction[] = [];
    const replies: unknown[] = [];
    for (const ev of evs) {
      const r = presenceStep(s, ev, CFG);
      s = r.state;
      actions.push(...r.actions);
      replies.push(r.reply);
    }
    return { state: s, actions, replies };
  };
  const dialed = run(emptyPresence(), { type: 'dial', me: app, reqId: 'r1', to: 'hub', sessionId: SID, now: 0 });

  it('a dial records the request and calls the target with the same deadlines', () => {
    expect(dialed.actions).toEqual([
      { type: 'call_incoming', to: 'hub', call: { from: 'app', fromHomes: ['home-1'], initiatorReqId: 'r1', sessionId: SID, offlineAt: 3000, timeoutAt: 30_000 } },
    ]);
    expect(wakeOf(dialed.state)).toBe(3000);
  });

  it("the dialer's budget sets the request timeout (capped by the service's), and reaches the target", () => {
    const short = run(emptyPresence(), { type: 'dial', me: app, reqId: 'r2', to: 'hub', sessionId: SID, timeoutMs: 8000, now: 1000 });
    const call = (short.actions[0] as Extract<PresenceAction, { type: 'call_incoming' }>).call;
    expect(call).toMatchObject({ offlineAt: 4000, timeoutAt: 9000 });
    const rang = run(emptyPresence(), { type: 'incoming', me: hub, call, reqId: 't2', now: 1500 });
    expect(rang.actions).toEqual([{ type: 'send', message: { type: 'request', reqId: 't2', from: 'app', sessionId: SID, timeoutMs: 7500 } }]);
    // Ringing but unanswered: the verdict comes when the dialer gives up, not 30 s later.
    const ringing = run(short.state, { type: 'incoming_result', me: null, reqId: 'r2', sessionId: SID, delivered: true, now: 0 });
    expect(run(ringing.state, { type: 'alarm', now: 8999, heardAt: null }).actions).toEqual([]);
    expect(run(ringing.state, { type: 'alarm', now: 9000, heardAt: null }).actions[0]).toEqual({ type: 'send', message: { type: 'dial_failed', reqId: 'r2', code: 'timeout' } });
    // The target hears that the dialer's time ran out (its accept() then reports Timeout).
    expect(run(rang.state, { type: 'alarm', now: 9000, heardAt: null }).actions).toEqual([{ type: 'send', message: { type: 'cancelled', reqId: 't2', reason: 'timeout' } }]);
    // A budget beyond the service's own timeout is capped.
    const long = run(emptyPresence(), { type: 'dial', me: app, reqId: 'r3', to: 'hub', sessionId: SID, timeoutMs: 300_000, now: 0 });
    expect((long.actions[0] as Extract<PresenceAction, { type: 'call_incoming' }>).call.timeoutAt).toBe(30_000);
  });

  it('initiator side: unknown, offline and forbidden targets all end the same way at offlineAt', () => {
    // Whatever the target side did, the initiator hears no result but "not delivered".
    const unknown = run(dialed.state, { type: 'incoming_result', me: null, reqId: 'r1', sessionId: SID, delivered: false, now: 0 }, { type: 'alarm', now: 2999, heardAt: null });
    expect(unknown.actions).toEqual([]);
    const failed = run(unknown.state, { type: 'alarm', now: 3000, heardAt: null });
    expect(failed.actions).toEqual([
      { type: 'send', message: { type: 'dial_failed', reqId: 'r1', code: 'peer_offline' } },
      { type: 'call_cancel_incoming', to: 'hub', sessionId: SID },
    ]);
    expect(failed.state.dials).toEqual({});
  });

  it('target side: forbidden and offline answer the caller identically; only the allowed one rings', () => {
    const call = (dialed.actions[0] as Extract<PresenceAction, { type: 'call_incoming' }>).call;
    const forbidden = run(emptyPresence(), { type: 'incoming', me: stranger, call, reqId: 't1', now: 0 });
    expect(forbidden.replies).toEqual([{ delivered: false }]);
    expect(forbidden.actions).toEqual([]);
    expect(forbidden.state).toEqual(emptyPresence());
    const offline = run(emptyPresence(), { type: 'incoming', me: null, call, reqId: 't1', now: 0 });
    expect(offline.replies).toEqual([{ delivered: false }]);
    expect(offline.actions).toEqual([]);
    const online = run(emptyPresence(), { type: 'incoming', me: hub, call, reqId: 't1', now: 0 });
    expect(online.replies).toEqual([{ delivered: true }]);
    expect(online.actions).toEqual([{ type: 'send', message: { type: 'request', reqId: 't1', from: 'app', sessionId: SID, timeoutMs: 30_000 } }]);
    // The held request reaches the target when it connects with a home in common, and not otherwise.
    expect(run(offline.state, { type: 'connected', me: stranger, now: 100 }).actions).toEqual([]);
    const back = run(offline.state, { type: 'connected', me: hub, now: 100 });
    expect(back.actions).toEqual([
      // What is left of the dialer's budget when it is delivered, not the whole of it.
      { type: 'send', message: { type: 'request', reqId: 't1', from: 'app', sessionId: SID, timeoutMs: 29_900 } },
      { type: 'call_delivered', to: 'app', initiatorReqId: 'r1', sessionId: SID, reqId: 't1' },
    ]);
    // The initiator had already given up: the target hears cancelled.
    expect(run(back.state, { type: 'delivered_result', reqId: 't1', live: false }).actions).toEqual([
      { type: 'send', message: { type: 'cancelled', reqId: 't1' } },
    ]);
  });

  it('ringing: no offline verdict; accept creates the room before anyone hears, once', () => {
    const ringing = run(dialed.state, { type: 'incoming_result', me: null, reqId: 'r1', sessionId: SID, delivered: true, now: 0 }, { type: 'alarm', now: 3000, heardAt: null });
    expect(ringing.actions).toEqual([]);
    const accept = { type: 'answered' as const, me: app, call: { reqId: 'r1', sessionId: SID, responder: 'hub', accept: true }, now: 5000 };
    const ok = run(ringing.state, accept);
    expect(ok.replies).toEqual([{ ok: true, deadline: 605_000 }]);
    expect(ok.actions).toEqual([
      { type: 'init_room', meta: { sessionId: SID, initiator: 'app', responder: 'hub', deadline: 605_000 } },
      { type: 'send_session', reqId: 'r1', sessionId: SID, peer: 'hub', role: 'initiator', deadline: 605_000 },
    ]);
    // Nothing is kept for the session here: the room is found by its id and knows its members.
    expect(ok.state).toEqual(emptyPresence());
    expect(run(ok.state, accept).replies).toEqual([{ ok: false }]);
    // Someone else answering for the request, or too late, is refused.
    expect(run(ringing.state, { ...accept, call: { ...accept.call, responder: 'eve' } }).replies).toEqual([{ ok: false }]);
    expect(run(ringing.state, { ...accept, now: 30_000 }).replies).toEqual([{ ok: false }]);
    const timedOut = run(ringing.state, { type: 'alarm', now: 30_000, heardAt: null });
    expect(timedOut.actions[0]).toEqual({ type: 'send', message: { type: 'dial_failed', reqId: 'r1', code: 'timeout' } });
  });

  it('both sides declared tickets: no init call, both sessions carry the ticket; one side without: init as before', () => {
    const ringing = run(dialed.state, { type: 'incoming_result', me: null, reqId: 'r1', sessionId: SID, delivered: true, now: 0 });
    const both = run(ringing.state, { type: 'answered', me: { ...app, tickets: true }, call: { reqId: 'r1', sessionId: SID, responder: 'hub', accept: true, tickets: true }, now: 5000 });
    expect(both.replies).toEqual([{ ok: true, deadline: 605_000, tickets: true }]);
    expect(both.actions).toEqual([{ type: 'send_session', reqId: 'r1', sessionId: SID, peer: 'hub', role: 'initiator', deadline: 605_000, ticket: true }]);
    // Either side without the capability: the room is created ahead and stored, no ticket.
    for (const [meTickets, callTickets] of [[true, false], [false, true]] as const) {
      const one = run(ringing.state, { type: 'answered', me: { ...app, tickets: meTickets }, call: { reqId: 'r1', sessionId: SID, responder: 'hub', accept: true, tickets: callTickets }, now: 5000 });
      expect(one.replies).toEqual([{ ok: true, deadline: 605_000 }]);
      expect(one.actions.map((a) => a.type)).toEqual(['init_room', 'send_session']);
      expect(one.actions[1]).not.toHaveProperty('ticket');
    }
    // The responder's side: its answer says whether it declared the capability; the reply says
    // whether the session is ticketed, and its `session` carries the ticket then.
    const incoming = (dialed.actions[0] as Extract<PresenceAction, { type: 'call_incoming' }>).call;
    const rang = run(emptyPresence(), { type: 'incoming', me: { ...hub, tickets: true }, call: incoming, reqId: 't1', now: 0 }).state;
    expect(run(rang, { type: 'answer', me: { ...hub, tickets: true }, reqId: 't1', accept: true, now: 10 }).actions[0]).toMatchObject({ type: 'call_answered', call: { tickets: true } });
    expect(run(rang, { type: 'answered_result', reqId: 't1', from: 'app', sessionId: SID, accept: true, ok: true, deadline: 99, tickets: true }).actions).toEqual([
      { type: 'send_session', reqId: 't1', sessionId: SID, peer: 'app', role: 'responder', deadline: 99, ticket: true },
    ]);
  });

  it('target answers: the record goes at once; a refused answer tells the target cancelled', () => {
    const call = (dialed.actions[0] as Extract<PresenceAction, { type: 'call_incoming' }>).call;
    const rang = run(emptyPresence(), { type: 'incoming', me: hub, call, reqId: 't1', now: 0 }).state;
    const ans = run(rang, { type: 'answer', me: hub, reqId: 't1', accept: true, now: 10 });
    expect(ans.actions).toEqual([{ type: 'call_answered', to: 'app', call: { reqId: 'r1', sessionId: SID, responder: 'hub', accept: true }, reqId: 't1', timeoutAt: 30_000 }]);
    expect(run(ans.state, { type: 'answer', me: hub, reqId: 't1', accept: true, now: 11 }).actions[0]).toMatchObject({
      message: { type: 'error', code: 'out_of_state', reqId: 't1' },
    });
    expect(run(ans.state, { type: 'answered_result', reqId: 't1', from: 'app', sessionId: SID, accept: true, ok: false }).actions).toEqual([
      { type: 'send', message: { type: 'cancelled', reqId: 't1' } },
    ]);
    // Refused before the deadline (withdrawn) or after it (the answer was too late): only the latter says timeout.
    const refused = (now: number) => run(ans.state, { type: 'answered_result', reqId: 't1', from: 'app', sessionId: SID, accept: true, ok: false, timeoutAt: 30_000, now }).actions;
    expect(refused(29_999)).toEqual([{ type: 'send', message: { type: 'cancelled', reqId: 't1' } }]);
    expect(refused(30_000)).toEqual([{ type: 'send', message: { type: 'cancelled', reqId: 't1', reason: 'timeout' } }]);
    const done = run(ans.state, { type: 'answered_result', reqId: 't1', from: 'app', sessionId: SID, accept: true, ok: true, deadline: 99 });
    expect(done.actions).toEqual([{ type: 'send_session', reqId: 't1', sessionId: SID, peer: 'app', role: 'responder', deadline: 99 }]);
  });

  it('cancel, leaving, and refused dials', () => {
    expect(run(dialed.state, { type: 'cancel', reqId: 'r1' }).actions).toEqual([
      { type: 'send', message: { type: 'cancelled', reqId: 'r1' } },
      { type: 'call_cancel_incoming', to: 'hub', sessionId: SID },
    ]);
    // A dialer whose budget ran out says so; the target hears it, and a plain cancel stays plain.
    expect(run(dialed.state, { type: 'cancel', reqId: 'r1', timeout: true }).actions[1]).toEqual({ type: 'call_cancel_incoming', to: 'hub', sessionId: SID, timeout: true });
    const call = (dialed.actions[0] as Extract<PresenceAction, { type: 'call_incoming' }>).call;
    const rang = run(emptyPresence(), { type: 'incoming', me: hub, call, reqId: 't1', now: 0 }).state;
    expect(run(rang, { type: 'cancel_incoming', sessionId: SID, timeout: true }).actions).toEqual([{ type: 'send', message: { type: 'cancelled', reqId: 't1', reason: 'timeout' } }]);
    expect(run(rang, { type: 'cancel_incoming', sessionId: SID }).actions).toEqual([{ type: 'send', message: { type: 'cancelled', reqId: 't1' } }]);
    expect(run(dialed.state, { type: 'gone', me: app }).actions).toEqual([]);
    const left = run(dialed.state, { type: 'gone', me: null });
    expect(left.actions).toEqual([{ type: 'call_cancel_incoming', to: 'hub', sessionId: SID }]);
    expect(left.state.dials).toEqual({});
    const again = run(dialed.state, { type: 'dial', me: app, reqId: 'r1', to: 'x', sessionId: SID, now: 1 });
    expect(again.state).toBe(dialed.state);
    expect(again.actions[0]).toMatchObject({ message: { code: 'out_of_state' } });
    let s = emptyPresence();
    for (let i = 0; i < 16; i++) s = run(s, { type: 'dial', me: app, reqId: `d${i}`, to: 'hub', sessionId: `${SID}${i}`, now: 0 }).state;
    expect(run(s, { type: 'dial', me: app, reqId: 'd99', to: 'hub', sessionId: SID, now: 0 }).actions[0]).toMatchObject({ message: { code: 'rate_limited' } });
  });

  describe('confirmed delivery (ack-capable targets)', () => {
    const call = (dialed.actions[0] as Extract<PresenceAction, { type: 'call_incoming' }>).call;
    const acking = { ...hub, acks: true };
    const lost: PresenceAction[] = [
      { type: 'close_socket', reason: 'unresponsive' },
      { type: 'call_unreachable', to: 'app', initiatorReqId: 'r1', sessionId: SID },
    ];
    const rang = run(emptyPresence(), { type: 'incoming', me: acking, call, reqId: 't1', now: 1000 });

    it('a delivered request waits for a receipt until the ack deadline, and the alarm is set for it', () => {
      expect(rang.replies).toEqual([{ delivered: true }]);
      expect(rang.state.incoming['t1']).toMatchObject({ delivered: true, awaitingAck: { sentAt: 1000, by: 6000 } });
      expect(wakeOf(rang.state)).toBe(6000);
      // The stale sweep of the socket stays the alarm when it is earlier.
      expect(wakeOf(rang.state, 4000)).toBe(4000);
    });

    it('a silent socket at the deadline is closed and the initiator told, once', () => {
      expect(run(rang.state, { type: 'alarm', now: 5999, heardAt: 1000 }).actions).toEqual([]);
      const dead = run(rang.state, { type: 'alarm', now: 6000, heardAt: 1000 });
      expect(dead.actions).toEqual(lost);
      expect(dead.state).toEqual(emptyPresence());
      expect(wakeOf(dead.state)).toBeNull();
      expect(run(dead.state, { type: 'alarm', now: 7000, heardAt: 1000 }).actions).toEqual([]);
      // The socket closed meanwhile (no current socket): only the initiator is told.
      expect(run(rang.state, { type: 'alarm', now: 6000, heardAt: null }).actions).toEqual([lost[1]]);
    });

    it('ringing, or anything heard after the request, confirms it: no failure, the request stays', () => {
      const acked = run(rang.state, { type: 'ringing', reqId: 't1' });
      expect(acked.actions).toEqual([]);
      expect(acked.state.incoming['t1']?.awaitingAck).toBeUndefined();
      expect(wakeOf(acked.state)).toBe(call.timeoutAt);
      expect(run(acked.state, { type: 'alarm', now: 6000, heardAt: 1000 }).actions).toEqual([]);
      const heard = run(rang.state, { type: 'alarm', now: 6000, heardAt: 1001 });
      expect(heard.actions).toEqual([]);
      expect(heard.state.incoming['t1']).toMatchObject({ delivered: true });
      expect(heard.state.incoming['t1']?.awaitingAck).toBeUndefined();
      // A receipt for an unknown or already confirmed request changes nothing.
      expect(run(acked.state, { type: 'ringing', reqId: 't1' }).state).toBe(acked.state);
      expect(run(rang.state, { type: 'ringing', reqId: 'nope' }).state).toBe(rang.state);
    });

    it('a target without the capability never has a request failed for want of a receipt', () => {
      const legacy = run(emptyPresence(), { type: 'incoming', me: hub, call, reqId: 't1', now: 1000 });
      expect(legacy.state.incoming['t1']?.awaitingAck).toBeUndefined();
      expect(wakeOf(legacy.state)).toBe(call.timeoutAt);
      expect(run(legacy.state, { type: 'alarm', now: 6000, heardAt: 1000 }).actions).toEqual([]);
      expect(run(legacy.state, { type: 'alarm', now: 6000, heardAt: null }).actions).toEqual([]);
    });

    it('a target that reconnects before the deadline gets the request again, and the deadline starts over', () => {
      const back = run(rang.state, { type: 'connected', me: acking, now: 4000 });
      expect(back.actions).toEqual([{ type: 'send', message: { type: 'request', reqId: 't1', from: 'app', sessionId: SID, timeoutMs: call.timeoutAt - 4000 } }]);
      expect(back.state.incoming['t1']?.awaitingAck).toEqual({ sentAt: 4000, by: 9000 });
      expect(run(back.state, { type: 'alarm', now: 6000, heardAt: 4000 }).actions).toEqual([]);
      expect(run(back.state, { type: 'alarm', now: 9000, heardAt: 4000 }).actions).toEqual(lost);
      // Back on a socket without the capability: the old rules.
      const legacy = run(rang.state, { type: 'connected', me: hub, now: 4000 });
      expect(legacy.state.incoming['t1']?.awaitingAck).toBeUndefined();
      expect(run(legacy.state, { type: 'alarm', now: 9000, heardAt: 4000 }).actions).toEqual([]);
    });

    it('a held request delivered on connect waits for its receipt too', () => {
      const held = run(emptyPresence(), { type: 'incoming', me: null, call, reqId: 't1', now: 0 });
      const back = run(held.state, { type: 'connected', me: acking, now: 500 });
      expect(back.state.incoming['t1']).toMatchObject({ delivered: true, awaitingAck: { sentAt: 500, by: 5500 } });
      expect(run(back.state, { type: 'alarm', now: 5500, heardAt: 500 }).actions).toEqual(lost);
    });

    it('initiator side: unreachable fails a live dial with peer_offline at once, and nothing else', () => {
      const ringing = run(dialed.state, { type: 'incoming_result', me: null, reqId: 'r1', sessionId: SID, delivered: true, now: 0 });
      const failed = run(ringing.state, { type: 'unreachable', reqId: 'r1', sessionId: SID });
      expect(failed.replies).toEqual([{ live: true }]);
      expect(failed.actions).toEqual([{ type: 'send', message: { type: 'dial_failed', reqId: 'r1', code: 'peer_offline' } }]);
      expect(failed.state).toEqual(emptyPresence());
      // Too late (answered, cancelled) or another session: nothing happens.
      expect(run(failed.state, { type: 'unreachable', reqId: 'r1', sessionId: SID })).toMatchObject({ actions: [], replies: [{ live: false }] });
      const other = run(ringing.state, { type: 'unreachable', reqId: 'r1', sessionId: 'X'.repeat(22) });
      expect(other).toMatchObject({ actions: [], replies: [{ live: false }] });
      expect(other.state).toBe(ringing.state);
    });
  });

  describe('early join (both sides declared it)', () => {
    const eApp = { ...app, tickets: true, batches: true, early: true };
    const eHub = { ...hub, tickets: true, batches: true, early: true };
    const dial = run(emptyPresence(), { type: 'dial', me: eApp, reqId: 'r1', to: 'hub', sessionId: SID, now: 0 });
    const call = (dial.actions[0] as Extract<PresenceAction, { type: 'call_incoming' }>).call;
    const rang = run(emptyPresence(), { type: 'incoming', me: eHub, call, reqId: 't1', now: 100 });

    it("the target's request carries its half, and the dialer gets its session once the request is delivered", () => {
      expect(call).toMatchObject({ early: true, batches: true });
      expect(rang.actions).toEqual([
        { type: 'send_early_request', message: { type: 'request', reqId: 't1', from: 'app', sessionId: SID, timeoutMs: 29_900 }, deadline: 100 + CFG.sessionTtlMs, batch: true },
      ]);
      expect(rang.replies).toEqual([{ delivered: true, early: true, batches: true }]);
      const told = run(dial.state, { type: 'incoming_result', me: eApp, reqId: 'r1', sessionId: SID, delivered: true, early: true, batches: true, now: 200 });
      expect(told.actions).toEqual([
        { type: 'send_session', reqId: 'r1', sessionId: SID, peer: 'hub', role: 'initiator', deadline: 200 + CFG.sessionTtlMs, ticket: true, early: true, batch: true },
      ]);
      expect(told.state.dials['r1']).toMatchObject({ ringing: true, early: true });
    });

    it('at the answer neither side gets a session; a reject still reaches the dialer', () => {
      const told = run(dial.state, { type: 'incoming_result', me: eApp, reqId: 'r1', sessionId: SID, delivered: true, early: true, batches: true, now: 200 });
      const answer = run(rang.state, { type: 'answer', me: eHub, reqId: 't1', accept: true, now: 300 });
      const answered = answer.actions[0] as Extract<PresenceAction, { type: 'call_answered' }>;
      expect(answered.call).toMatchObject({ early: true, tickets: true });
      const atDialer = run(told.state, { type: 'answered', me: eApp, call: answered.call, now: 400 });
      expect(atDialer.actions).toEqual([]);
      expect(atDialer.replies).toEqual([{ ok: true, deadline: 400 + CFG.sessionTtlMs, tickets: true, batch: true }]);
      expect(atDialer.state.dials).toEqual({});
      const atTarget = run(answer.state, { type: 'answered_result', reqId: 't1', from: 'app', sessionId: SID, accept: true, ok: true, deadline: 1, tickets: true, batch: true, early: true });
      expect(atTarget.actions).toEqual([]);
      // The dialer gave up meanwhile: the target is told, so it closes the link it started.
      const gone = run(answer.state, { type: 'answered_result', reqId: 't1', from: 'app', sessionId: SID, accept: true, ok: false, early: true });
      expect(gone.actions).toEqual([{ type: 'send', message: { type: 'cancelled', reqId: 't1' } }]);
      const reject = run(told.state, { type: 'answered', me: eApp, call: { ...answered.call, accept: false, reason: 'busy' }, now: 400 });
      expect(reject.actions).toEqual([{ type: 'send', message: { type: 'rejected', reqId: 'r1', reason: 'busy' } }]);
    });

    it('a side without the capability (or without tickets) keeps the old exchange', () => {
      const classicHub = run(emptyPresence(), { type: 'incoming', me: { ...eHub, early: false }, call, reqId: 't1', now: 100 });
      expect(classicHub.actions[0]?.type).toBe('send');
      expect(classicHub.replies).toEqual([{ delivered: true }]);
      const classicApp = run(emptyPresence(), { type: 'dial', me: { ...eApp, early: false }, reqId: 'r1', to: 'hub', sessionId: SID, now: 0 });
      const c2 = (classicApp.actions[0] as Extract<PresenceAction, { type: 'call_incoming' }>).call;
      expect(c2.early).toBeUndefined();
      expect(run(emptyPresence(), { type: 'incoming', me: eHub, call: c2, reqId: 't1', now: 100 }).actions[0]?.type).toBe('send');
      // The dialer without early join hears nothing before the answer, and its session after it.
      const plain = run(dial.state, { type: 'incoming_result', me: { ...eApp, early: false }, reqId: 'r1', sessionId: SID, delivered: true, early: true, now: 200 });
      expect(plain.actions).toEqual([]);
      const answered = run(plain.state, { type: 'answered', me: eApp, call: { reqId: 'r1', sessionId: SID, responder: 'hub', accept: true, tickets: true, batches: true, early: true }, now: 400 });
      expect(answered.actions[0]).toMatchObject({ type: 'send_session', role: 'initiator', ticket: true });
    });

    it('a request held for an offline target goes out early on connect, and again to a new early socket; a legacy socket gets it plain', () => {
      const held = run(emptyPresence(), { type: 'incoming', me: null, call, reqId: 't1', now: 0 });
      expect(held.replies).toEqual([{ delivered: false }]);
      const back = run(held.state, { type: 'connected', me: eHub, now: 500 });
      expect(back.actions[0]).toMatchObject({ type: 'send_early_request', deadline: 500 + CFG.sessionTtlMs, batch: true });
      expect(back.state.incoming['t1']).toMatchObject({ delivered: true, sentEarly: true });
      const again = run(back.state, { type: 'connected', me: eHub, now: 900 });
      expect(again.actions).toEqual([expect.objectContaining({ type: 'send_early_request', deadline: 900 + CFG.sessionTtlMs })]);
      const legacy = run(back.state, { type: 'connected', me: { ...eHub, early: false }, now: 900 });
      expect(legacy.actions[0]?.type).toBe('send');
      expect(legacy.state.incoming['t1']?.sentEarly).toBeUndefined();
      // Its answer then asks for a session as before.
      const answer = run(legacy.state, { type: 'answer', me: eHub, reqId: 't1', accept: true, now: 1000 });
      expect((answer.actions[0] as Extract<PresenceAction, { type: 'call_answered' }>).call.early).toBeUndefined();
    });
  });
});

describe('rate limiter', () => {
  it('allows a burst, then refills at the configured rate', () => {
    const b = fullBucket(0);
    let ok = 0;
    for (let i = 0; i < RATE_LIMIT.burst + 50; i++) if (take(b, 0)) ok++;
    expect(ok).toBe(RATE_LIMIT.burst);
    expect(take(b, 1000 / RATE_LIMIT.perSecond - 1)).toBe(false);
    expect(take(b, 1000 / RATE_LIMIT.perSecond + 1)).toBe(true);
    // A clock going backwards never mints tokens.
    expect(take(b, -10_000)).toBe(false);
  });
});

const relay = (id: string, lat: number, lon: number): RelayEntry => ({ id, region: id, lat, lon, host: `${id}.example`, udpPort: 3478, tcpPort: 3478, tlsPort: 5349 });

describe('relay choice and ICE servers', () => {
  const relays = [relay('fra', 50.1, 8.7), relay('iad', 39.0, -77.5), relay('sin', 1.35, 103.8)];
  it('nearest first, at most two; config order without a location', () => {
    expect(chooseRelays(relays, { lat: 52.5, lon: 13.4 }).map((r) => r.id)).toEqual(['fra', 'iad']);
    expect(chooseRelays(relays, { lat: -33.9, lon: 151.2 }).map((r) => r.id)).toEqual(['sin', 'iad']);
    expect(chooseRelays(relays, { lat: 40.7, lon: -74 }).map((r) => r.id)).toEqual(['iad', 'fra']);
    expect(chooseRelays(relays, null).map((r) => r.id)).toEqual(['fra', 'iad']);
  });
  it('reads request.cf leniently', () => {
    expect(locationFromCf({ latitude: '52.5', longitude: '13.4' })).toEqual({ lat: 52.5, lon: 13.4 });
    expect(locationFromCf({})).toBeNull();
    expect(locationFromCf(undefined)).toBeNull();
    expect(locationFromCf({ latitude: 'x', longitude: '1' })).toBeNull();
    expect(locationFromCf({ latitude: '91', longitude: '1' })).toBeNull();
  });
  it('no relays configured: no ICE servers', async () => {
    const config = loadConfig({ ...baseVars(), RELAYS: '[]' });
    expect(await iceServersFor(config, 'app', null, 0)).toEqual([]);
  });
});

function baseVars(): WorkerVars {
  return {
    JWT_ISSUER: 'iss',
    JWT_AUDIENCE: 'aud',
    JWKS: JSON.stringify({ keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y' }] }),
    TURN_SECRETS: 'a-secret-of-some-length,an-older-secret-value',
    RELAYS: JSON.stringify([relay('fra', 50.1, 8.7)]),
  };
}

describe('configuration', () => {
  it('applies named defaults and keeps every TURN secret, the first minting', () => {
    const c = loadConfig(baseVars());
    expect(c.turnSecrets).toEqual(['a-secret-of-some-length', 'an-older-secret-value']);
    expect(c.offlineWaitMs).toBe(3000);
    expect(c.requestTimeoutMs).toBe(30_000);
    expect(c.sessionTtlSeconds).toBe(600);
    expect(c.presenceStaleMs).toBe(60_000);
    expect(c.presenceSweepMs).toBe(3_600_000);
    expect(c.devHs256Secret).toBeNull();
  });

  const bad: Array<[keyof WorkerVars, WorkerVars]> = [
    ['JWT_ISSUER', { JWT_ISSUER: '' }],
    ['JWT_AUDIENCE', { JWT_AUDIENCE: undefined }],
    ['JWKS', { JWKS: '{not json' }],
    ['JWKS', { JWKS: '{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}' }],
    ['JWKS', { JWKS: '{"keys":[{"kty":"EC","d":"private"}]}' }],
    ['JWKS', { JWKS: '' }],
    ['JWKS_URL', { JWKS_URL: 'http://insecure.example/jwks' }],
    ['DEV_HS256_SECRET', { DEV_HS256_SECRET: 'short' }],
    ['TURN_SECRETS', { TURN_SECRETS: ' , ' }],
    ['TURN_SECRETS', { TURN_SECRETS: 'tiny' }],
    ['TURN_TTL_SECONDS', { TURN_TTL_SECONDS: '-5' }],
    ['OFFLINE_WAIT_MS', { OFFLINE_WAIT_MS: '1e3' }],
    ['REQUEST_TIMEOUT_MS', { REQUEST_TIMEOUT_MS: '10' }],
    ['SESSION_TTL_SECONDS', { SESSION_TTL_SECONDS: '999999999' }],
    ['PRESENCE_SWEEP_MS', { PRESENCE_SWEEP_MS: '10' }],
    ['PRESENCE_SWEEP_MS', { PRESENCE_SWEEP_MS: '86400001' }],
    ['RELAYS', { RELAYS: '{}' }],
    ['RELAYS', { RELAYS: '[{"id":"a"}]' }],
    ['RELAYS', { RELAYS: JSON.stringify([relay('a', 0, 0), relay('a', 1, 1)]) }],
    ['RELAYS', { RELAYS: JSON.stringify([{ ...relay('a', 0, 0), udpPort: 70000 }]) }],
    ['RELAYS', { RELAYS: JSON.stringify([{ ...relay('a', 0, 0), host: 'evil host/x' }]) }],
  ];
  for (const [field, override] of bad) {
    it(`refuses a bad ${field} naming the field, never the value (${JSON.stringify(Object.values(override)[0] ?? null).slice(0, 30)})`, () => {
      const vars = { ...baseVars(), ...override };
      let err: unknown;
      try {
        loadConfig(vars);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).field).toBe(field);
      expect((err as Error).message).toContain(field);
      const value = Object.values(override)[0];
      if (typeof value === 'string' && value.length >= 5) expect((err as Error).message).not.toContain(value);
    });
  }

  it('parseRelays: property: any entry it accepts round-trips through JSON unchanged', () => {
    fc.assert(
      fc.property(
        fc.record({
          id: fc.stringMatching(/^[a-z0-9]{1,10}$/),
          lat: fc.double({ min: -90, max: 90, noNaN: true }),
          lon: fc.double({ min: -180, max: 180, noNaN: true }),
          udpPort: fc.integer({ min: 1, max: 65535 }),
        }),
        (r) => {
          const entry = { ...relay(r.id, r.lat, r.lon), udpPort: r.udpPort };
          expect(parseRelays(JSON.stringify([entry]))).toEqual([JSON.parse(JSON.stringify(entry))]);
        },
      ),
    );
  });
});
