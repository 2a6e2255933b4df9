/**
 * Typed errors for everything that parses input crossing a trust boundary.
 * Expected wire failures are values carrying a stable `code`; the message never
 * contains the offending input verbatim when that input may be a secret.
 */
export type ProtocolErrorCode =
  | 'malformed'
  | 'oversized'
  | 'unknown_type'
  | 'bad_version'
  | 'invalid_field'
  | 'out_of_state'
  | 'rate_limited'
  | 'unauthorized'
  | 'forbidden';

export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  constructor(
    readonly code: ProtocolErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A parse result: a typed value or a typed error, never an exception. */
export type Parsed<T> = { ok: true; value: T } | { ok: false; error: ProtocolError };

export const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
export const fail = <T = never>(code: ProtocolErrorCode, message: string): Parsed<T> => ({
  ok: false,
  error: new ProtocolError(code, message),
});
