export * from './errors.js';
export * from './messages.js';
export * from './tokens.js';
export * from './turn-credentials.js';
export * from './ice-url.js';
export * from './resume.js';
