/**
 * STUN/TURN wire constants: one registry per number space so none is reused.
 * Values from the IANA "STUN Parameters" registry (RFC 8489 §18, RFC 8656 §18).
 */

/** RFC 8489 §6: fixed value in bytes 4..8 of every STUN message. */
export const MAGIC_COOKIE = 0x2112a442;
/** RFC 8489 §5: the header is 20 bytes (type, length, cookie, 96-bit transaction id). */
export const HEADER_LENGTH = 20;
/** RFC 8489 §5: transaction id length in bytes. */
export const TRANSACTION_ID_LENGTH = 12;
/** RFC 8489 §14.16: CRC-32 of the message XOR this value ("STUN"). */
export const FINGERPRINT_XOR = 0x5354554e;

/** RFC 8489 §5: message classes, as the two class bits C1C0. */
export const StunClass = {
  Request: 0,
  Indication: 1,
  SuccessResponse: 2,
  ErrorResponse: 3,
} as const;
export type StunClass = (typeof StunClass)[keyof typeof StunClass];

/** Methods: Binding (RFC 8489), TURN methods (RFC 8656 §17). */
export const StunMethod = {
  Binding: 0x001,
  Allocate: 0x003,
  Refresh: 0x004,
  Send: 0x006,
  Data: 0x007,
  CreatePermission: 0x008,
  ChannelBind: 0x009,
} as const;
export type StunMethod = (typeof StunMethod)[keyof typeof StunMethod];

/** Attribute types. Below 0x8000: comprehension-required; 0x8000 and up: optional (RFC 8489 §14). */
export const Attr = {
  MappedAddress: 0x0001,
  Username: 0x0006,
  MessageIntegrity: 0x0008,
  ErrorCode: 0x0009,
  UnknownAttributes: 0x000a,
  ChannelNumber: 0x000c,
  Lifetime: 0x000d,
  XorPeerAddress: 0x0012,
  Data: 0x0013,
  Realm: 0x0014,
  Nonce: 0x0015,
  XorRelayedAddress: 0x0016,
  RequestedAddressFamily: 0x0017,
  EvenPort: 0x0018,
  RequestedTransport: 0x0019,
  DontFragment: 0x001a,
  MessageIntegritySha256: 0x001c,
  PasswordAlgorithm: 0x001d,
  Userhash: 0x001e,
  XorMappedAddress: 0x0020,
  ReservationToken: 0x0022,
  Priority: 0x0024,
  UseCandidate: 0x0025,
  PasswordAlgorithms: 0x8002,
  AlternateDomain: 0x8003,
  Software: 0x8022,
  AlternateServer: 0x8023,
  Fingerprint: 0x8028,
  IceControlled: 0x8029,
  IceControlling: 0x802a,
} as const;

/** Error codes used by this relay, with the RFC's reason phrases (RFC 8489 §14.8, RFC 8656 §18). */
export const ErrorCode = {
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  UnknownAttribute: 420,
  AllocationMismatch: 437,
  StaleNonce: 438,
  AddressFamilyNotSupported: 440,
  WrongCredentials: 441,
  UnsupportedTransportProtocol: 442,
  PeerAddressFamilyMismatch: 443,
  AllocationQuotaReached: 486,
  ServerError: 500,
  InsufficientCapacity: 508,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Reason phrases sent with each code (RFC 8489 §14.8 says they are for humans only). */
export const ERROR_REASONS: Readonly<Record<ErrorCode, string>> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  420: 'Unknown Attribute',
  437: 'Allocation Mismatch',
  438: 'Stale Nonce',
  440: 'Address Family not Supported',
  441: 'Wrong Credentials',
  442: 'Unsupported Transport Protocol',
  443: 'Peer Address Family Mismatch',
  486: 'Allocation Quota Reached',
  500: 'Server Error',
  508: 'Insufficient Capacity',
};

/** RFC 8656 §14.5: REQUESTED-TRANSPORT protocol number for UDP (the only one RFC 8656 defines). */
export const TRANSPORT_UDP = 17;
/** RFC 8656 §12: channel numbers 0x4000 through 0x4FFF are valid for ChannelBind. */
export const CHANNEL_MIN = 0x4000;
export const CHANNEL_MAX = 0x4fff;
/**
 * RFC 5766 §11 allowed 0x4000-0x7FFF, and clients written to it still pick numbers up to
 * 0x7FFF (coturn's turnutils_uclient does). Every such number still starts with the bits 01,
 * so demultiplexing is unaffected; the relay accepts the old range for interoperability.
 */
export const CHANNEL_MAX_LEGACY = 0x7fff;
/** RFC 8656 §14.1 / RFC 8489 §14.1: address family octets. */
export const FAMILY_IPV4 = 0x01;
export const FAMILY_IPV6 = 0x02;
