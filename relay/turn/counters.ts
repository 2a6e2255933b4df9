/**
 * The TURN core's counters: plain numeric fields, incremented in place on the
 * hot path (no labels, no per-user keys, so memory is constant). The metrics
 * module reads them to render Prometheus text.
 */
export interface TurnCounters {
  /** Gauges. */
  allocations: number;
  permissions: number;
  channels: number;
  /** Totals. */
  allocationsCreated: number;
  allocationsExpired: number;
  requests: number;
  packetsToPeer: number;
  bytesToPeer: number;
  packetsToClient: number;
  bytesToClient: number;
  /** Drops by reason. */
  dropMalformed: number;
  dropNoAllocation: number;
  dropNoPermission: number;
  dropNoChannel: number;
  dropBandwidth: number;
  dropSendFailed: number;
  dropBackpressure: number;
  /** Auth outcomes (401 challenges to unauthenticated requests are normal, not failures). */
  authChallenges: number;
  authMissingFields: number;
  authStaleNonce: number;
  authBadUsername: number;
  authExpired: number;
  authBadIntegrity: number;
  authWrongCredentials: number;
  /** Peers refused by the peer policy (403 or a dropped Send). */
  peersDenied: number;
  /** The same by the policy's reason (a fixed set of strings, so bounded). */
  peersDeniedByReason: Record<string, number>;
  /** Quota refusals. */
  quotaAllocationsPerUser: number;
  quotaAllocationsTotal: number;
  quotaPermissions: number;
  quotaRelayPorts: number;
  quotaStreamBuffer: number;
}

/** Fresh counters, all zero. */
export function createTurnCounters(): TurnCounters {
  return {
    allocations: 0,
    permissions: 0,
    channels: 0,
    allocationsCreated: 0,
    allocationsExpired: 0,
    requests: 0,
    packetsToPeer: 0,
    bytesToPeer: 0,
    packetsToClient: 0,
    bytesToClient: 0,
    dropMalformed: 0,
    dropNoAllocation: 0,
    dropNoPermission: 0,
    dropNoChannel: 0,
    dropBandwidth: 0,
    dropSendFailed: 0,
    dropBackpressure: 0,
    authChallenges: 0,
    authMissingFields: 0,
    authStaleNonce: 0,
    authBadUsername: 0,
    authExpired: 0,
    authBadIntegrity: 0,
    authWrongCredentials: 0,
    peersDenied: 0,
    peersDeniedByReason: {},
    quotaAllocationsPerUser: 0,
    quotaAllocationsTotal: 0,
    quotaPermissions: 0,
    quotaRelayPorts: 0,
    quotaStreamBuffer: 0,
  };
}
