/** STUN/TURN wire codec (RFC 8489, RFC 8656): portable, Uint8Array/DataView only. */
export * from './constants.js';
export * from './result.js';
export * from './crc32.js';
export * from './ip.js';
export * from './message.js';
export * from './attributes.js';
export * from './channel-data.js';
export * from './stream.js';
export * from './client.js';
export * from './binding.js';
