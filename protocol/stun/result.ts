/**
 * Typed decode results for the STUN/TURN codec. Failures are plain values, not
 * exceptions, so a flood of garbage from the network costs no stack traces and
 * nothing ever throws out of a decoder.
 */

/** Why a decoder refused its input. */
export type StunErrorKind =
  | 'truncated' // fewer bytes than a length field promises
  | 'not_stun' // wrong leading bits or magic cookie
  | 'bad_length' // a length that is not a multiple of 4, or that disagrees with the bytes
  | 'oversized' // over a configured or protocol bound
  | 'bad_attribute' // an attribute in a forbidden position (after FINGERPRINT, ...)
  | 'bad_value' // an attribute value of the wrong size or content
  | 'bad_fingerprint'; // FINGERPRINT present but wrong

/** A decode failure: a kind for code and a short text for logs (never contains secrets). */
export interface StunError {
  readonly kind: StunErrorKind;
  readonly detail: string;
}

/** A decode result: a typed value or a typed error. */
export type Decoded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: StunError };

/** @internal */
export const decoded = <T>(value: T): Decoded<T> => ({ ok: true, value });
/** @internal */
export const refused = <T = never>(kind: StunErrorKind, detail: string): Decoded<T> => ({
  ok: false,
  error: { kind, detail },
});
