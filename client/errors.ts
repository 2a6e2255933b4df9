/**
 * Typed failures of the client library. Every error a caller can see from `Endpoint.connect`,
 * `ep.dial` or a `Link` is a `LinkError` whose `code` says what happened; messages never carry
 * a token, a password or a signature.
 *
 * @example
 * ```ts
 * try {
 *   await ep.dial('hub-1', { timeoutMs: 10_000 });
 * } catch (e) {
 *   if (e instanceof LinkError && e.code === 'PeerOffline') showOffline();
 *   else throw e;
 * }
 * ```
 */
export type LinkErrorCode =
  /** The target is offline, unknown, or not reachable under our token (the service makes these indistinguishable). */
  | 'PeerOffline'
  /** The target refused the request; `reason` carries its short explanation. */
  | 'Rejected'
  /** The service refused our token, or the peer's identity certificate is not signed by a trusted issuer. */
  | 'Unauthorized'
  /** A deadline passed (dial timeout, service wait, or connectivity checks). */
  | 'Timeout'
  /** The peer could not prove it is the endpoint dialed, or the DTLS keys differ from the ones it signed. */
  | 'IdentityMismatch'
  /** No candidate pair worked (direct or relayed) before the deadline. */
  | 'NoPath'
  /** The caller aborted through its `AbortSignal`. */
  | 'Aborted'
  /** The endpoint or link was closed while the operation was pending. */
  | 'Closed'
  /** The service or the peer broke the protocol (malformed or out-of-state frames). */
  | 'Protocol';

/** The one error type the client library throws or rejects with. */
export class LinkError extends Error {
  override readonly name = 'LinkError';
  constructor(
    /** Stable, machine-readable cause. */
    readonly code: LinkErrorCode,
    message: string,
    options?: { cause?: unknown; reason?: string },
  ) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.reason = options?.reason;
  }
  /** For `Rejected`: the reason the peer gave (at most 200 characters, peer-controlled text). */
  readonly reason: string | undefined;
}

/** Narrowing helper: `isLinkError(e, 'Timeout')`. */
export function isLinkError(e: unknown, code?: LinkErrorCode): e is LinkError {
  return e instanceof LinkError && (code === undefined || e.code === code);
}
