/**
 * The relay's counters, defined once: {@link COUNTERS} is the only list of them.
 * From it derive the core's counter object ({@link TurnCounters}, incremented in
 * place on the hot path), the snapshot a worker process sends its primary and
 * the sum the primary makes of them ({@link addCounters}), and the Prometheus
 * families that relay/metrics.ts renders.
 *
 * Every series is a property store on one object of fixed shape: no labels are
 * computed per packet, and labels only ever come from small fixed sets
 * (direction, drop reason, auth failure reason, deny reason, quota kind, stream
 * refusal reason). Nothing keyed by user, allocation or address is a series.
 */
import { DENY_REASONS, type DenyReason } from '../policy.js';

/** One counter: its field on the counter object and the Prometheus series it is. */
export interface CounterDef {
  /** Field name on {@link TurnCounters}. */
  readonly field: string;
  /** Metric family name without the `homelink_relay_` prefix; null for a counter kept but not exported. */
  readonly family: string | null;
  readonly type: 'gauge' | 'counter';
  /** One fixed label pair (`name="value"`) or empty. */
  readonly labels: string;
  /** HELP text of the family (the first series of a family carries it). */
  readonly help: string;
}

function c<F extends string>(field: F, family: string | null, type: 'gauge' | 'counter', labels: string, help = ''): CounterDef & { readonly field: F } {
  return { field, family, type, labels, help };
}

/** Every scalar counter, in exposition order. Series of one family are adjacent. */
export const COUNTERS = [
  c('allocations', 'allocations', 'gauge', '', 'Live TURN allocations.'),
  c('permissions', 'permissions', 'gauge', '', 'Live TURN permissions.'),
  c('channels', 'channels', 'gauge', '', 'Live TURN channel bindings.'),
  c('streamConnections', 'stream_connections', 'gauge', '', 'Open TCP/TLS client connections (TLS ones from accept, before the handshake).'),
  c('allocationsCreated', 'allocations_created_total', 'counter', '', 'Allocations created.'),
  c('allocationsExpired', 'allocations_expired_total', 'counter', '', 'Allocations that ended by expiry or refresh with lifetime 0.'),
  c('requests', 'requests_total', 'counter', '', 'STUN/TURN requests handled.'),
  c('packetsToPeer', 'packets_total', 'counter', 'direction="to_peer"', 'Packets relayed, by direction.'),
  c('packetsToClient', 'packets_total', 'counter', 'direction="to_client"'),
  c('bytesToPeer', 'bytes_total', 'counter', 'direction="to_peer"', 'Application payload bytes relayed, by direction.'),
  c('bytesToClient', 'bytes_total', 'counter', 'direction="to_client"'),
  c('nativeForwarded', 'native_forwarded_packets_total', 'counter', '', 'Packets the native data path forwarded on its own thread without the TURN core (each also counted in packets_total); 0 on node:dgram.'),
  c('hairpinPackets', 'hairpin_packets_total', 'counter', '', 'Packets from one allocation to another of the same relay process, delivered without leaving it (each also counted once per direction in packets_total).'),
  c('dropMalformed', 'dropped_packets_total', 'counter', 'reason="malformed"', 'Packets dropped, by reason.'),
  c('dropNoAllocation', 'dropped_packets_total', 'counter', 'reason="no_allocation"'),
  c('dropNoPermission', 'dropped_packets_total', 'counter', 'reason="no_permission"'),
  c('dropNoChannel', 'dropped_packets_total', 'counter', 'reason="no_channel"'),
  c('dropBandwidth', 'dropped_packets_total', 'counter', 'reason="bandwidth"'),
  c('dropSendFailed', 'dropped_packets_total', 'counter', 'reason="send_failed"'),
  c('dropBackpressure', 'dropped_packets_total', 'counter', 'reason="backpressure"'),
  c('authChallenges', 'auth_challenges_total', 'counter', '', '401 challenges to requests sent without credentials (normal).'),
  c('authMissingFields', 'auth_failures_total', 'counter', 'reason="missing_fields"', 'Authentication failures, by reason.'),
  c('authStaleNonce', 'auth_failures_total', 'counter', 'reason="stale_nonce"'),
  c('authBadUsername', 'auth_failures_total', 'counter', 'reason="bad_username"'),
  c('authExpired', 'auth_failures_total', 'counter', 'reason="expired"'),
  c('authBadIntegrity', 'auth_failures_total', 'counter', 'reason="bad_integrity"'),
  c('authWrongCredentials', 'auth_failures_total', 'counter', 'reason="wrong_credentials"'),
  c('quotaAllocationsPerUser', 'quota_refusals_total', 'counter', 'kind="allocations_per_user"', 'Requests refused by a quota, by kind.'),
  c('quotaAllocationsTotal', 'quota_refusals_total', 'counter', 'kind="allocations_total"'),
  c('quotaPermissions', 'quota_refusals_total', 'counter', 'kind="permissions"'),
  c('quotaRelayPorts', 'quota_refusals_total', 'counter', 'kind="relay_ports"'),
  c('quotaStreamBuffer', 'quota_refusals_total', 'counter', 'kind="stream_buffer"'),
  c('streamRefusedPerIp', 'stream_refusals_total', 'counter', 'reason="per_ip"', 'TCP/TLS connections refused at accept, by reason.'),
  c('streamRefusedTotal', 'stream_refusals_total', 'counter', 'reason="max_connections"'),
  c('streamHandshakeTimeouts', 'stream_timeouts_total', 'counter', 'phase="handshake"', 'TCP/TLS connections closed by a deadline, by phase.'),
  c('streamIdleTimeouts', 'stream_timeouts_total', 'counter', 'phase="idle"'),
  c('streamTlsErrors', 'stream_tls_errors_total', 'counter', '', 'TLS handshakes that failed (bad ClientHello, protocol or cipher mismatch).'),
  // The sum of the by-reason series below; kept for the core's tests, not exported (Prometheus sums).
  c('peersDenied', null, 'counter', ''),
] as const satisfies readonly CounterDef[];

/** Family and HELP of the per-reason peer denials (one series per {@link DENY_REASONS} entry). */
export const PEERS_DENIED_FAMILY = { family: 'peers_denied_total', help: 'Peer addresses refused by the peer policy, by reason.' } as const;

/** The name of a scalar counter. */
export type CounterField = (typeof COUNTERS)[number]['field'];

/** The counters of one relay process: plain numbers, incremented in place. */
export type TurnCounters = { [K in CounterField]: number } & {
  /** Peers refused by the policy, by its reason (a fixed set, so bounded). */
  readonly peersDeniedByReason: Record<DenyReason, number>;
};

/** The scalar field names, in table order. */
export const COUNTER_FIELDS: readonly CounterField[] = COUNTERS.map((d) => d.field);

/** Fresh counters, all zero. */
export function createTurnCounters(): TurnCounters {
  const out = {} as Record<string, unknown>;
  for (const f of COUNTER_FIELDS) out[f] = 0;
  const by = {} as Record<DenyReason, number>;
  for (const r of DENY_REASONS) by[r] = 0;
  out.peersDeniedByReason = by;
  return out as TurnCounters;
}

/** A plain, JSON-safe copy (e.g. for a worker to send to its primary). */
export function snapshotCounters(from: TurnCounters): TurnCounters {
  const out = createTurnCounters() as Record<string, unknown> & TurnCounters;
  for (const f of COUNTER_FIELDS) out[f] = from[f];
  for (const r of DENY_REASONS) out.peersDeniedByReason[r] = from.peersDeniedByReason[r];
  return out;
}

/**
 * Adds `other` (possibly from another process, so unchecked) into `into`. Unknown fields and
 * deny reasons are ignored; non-finite or non-numeric values count as 0.
 */
export function addCounters(into: TurnCounters, other: unknown): TurnCounters {
  if (typeof other !== 'object' || other === null) return into;
  const o = other as Record<string, unknown>;
  for (const f of COUNTER_FIELDS) {
    const v = o[f];
    if (typeof v === 'number' && Number.isFinite(v)) into[f] += v;
  }
  const by = o.peersDeniedByReason;
  if (typeof by === 'object' && by !== null) {
    for (const r of DENY_REASONS) {
      const v = (by as Record<string, unknown>)[r];
      if (typeof v === 'number' && Number.isFinite(v)) into.peersDeniedByReason[r] += v;
    }
  }
  return into;
}
