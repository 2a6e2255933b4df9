/**
 * Named defaults of the TURN core, each with its reason. The RFC-fixed
 * lifetimes are constants, not settings: clients refresh on the RFC's schedule.
 */

/** RFC 8656 §9: a permission lasts 300 s (clients refresh it before then). */
export const PERMISSION_LIFETIME_S = 300;
/** RFC 8656 §12: a channel binding lasts 600 s. */
export const CHANNEL_LIFETIME_S = 600;
/** RFC 8656 §3.4 / §7.2: the default allocation lifetime is 600 s. */
export const DEFAULT_ALLOCATION_LIFETIME_S = 600;
/** RFC 8656 §7.2 recommends a maximum of 3600 s; longer only keeps abandoned allocations alive. */
export const MAX_ALLOCATION_LIFETIME_S = 3600;
/**
 * A nonce stays valid 600 s: long enough that a client refreshing every few minutes
 * rarely meets 438, short enough that a leaked nonce is soon useless (coturn uses 600 s).
 */
export const NONCE_LIFETIME_S = 600;
/**
 * Allocations per username: an endpoint gathers one per relay transport per ICE
 * session (UDP, TCP, TLS) and may restart ICE, so 10 leaves room while stopping one
 * credential from draining the port pool.
 */
export const MAX_ALLOCATIONS_PER_USERNAME = 10;
/** Allocations in total per process: 10,000 idle allocations fit in memory many times over, and ports are the real bound. */
export const MAX_ALLOCATIONS = 10_000;
/** Permissions per allocation: ICE needs one per remote candidate address; 64 covers any real candidate list. */
export const MAX_PERMISSIONS_PER_ALLOCATION = 64;
/** Channel bindings per allocation: one per remote candidate pair in use; 64 like permissions. */
export const MAX_CHANNELS_PER_ALLOCATION = 64;
/**
 * Per-allocation bandwidth cap, both directions together: 32 MB/s (256 Mbit/s) is well
 * above a werift data channel (10-13 MB/s) yet stops one allocation from taking a
 * whole 1 Gbit/s link. 0 turns the cap off.
 */
export const BANDWIDTH_BYTES_PER_SECOND = 32 * 1024 * 1024;
/** Token-bucket depth: a quarter second at the cap, so bursts of a congestion window pass. */
export const BANDWIDTH_BURST_BYTES = 8 * 1024 * 1024;
/** Bytes buffered per TCP/TLS connection for an incomplete frame: the largest legal frame (65,540 B) plus slack. */
export const MAX_STREAM_BUFFER_BYTES = 66 * 1024;
/**
 * A TLS handshake must finish within 10 s of accept. A real one is two round trips plus a
 * signature (under 1 s even on a congested mobile link with a 1 s RTT); without a deadline a
 * client that opens connections and never sends a ClientHello holds each one for ever, which
 * was enough to lock every TCP/TLS user out (issue 9).
 */
export const STREAM_HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * A TCP/TLS connection without an allocation is closed when no whole frame arrives for 30 s.
 * Clients send Allocate right after connecting and the 401 round trip follows at once, so 30 s
 * is generous; it is measured on whole frames, not bytes, so one byte every few seconds keeps
 * nothing alive. Connections holding an allocation are bounded by its lifetime instead.
 */
export const STREAM_IDLE_TIMEOUT_MS = 30_000;
/**
 * Open TCP/TLS connections per source address (IPv6: per /64). An endpoint needs at most two
 * (one TCP, one TLS allocation per ICE session, plus one during an ICE restart); a carrier-grade
 * NAT puts many homes behind one IPv4 address, but only those whose UDP is blocked use streams.
 * 64 serves a large shared address while one host can hold only 64 of the
 * 2 x MAX_ALLOCATIONS connections a process accepts. The count is per process: with N workers
 * (the kernel spreads a source's connections over them) a source holds at most N x 64.
 */
export const MAX_STREAMS_PER_IP = 64;
